defmodule CerebrosBridge.Config do
  @moduledoc false
  # Bridge options: per call, over `config :cerebros_bridge, ...`, over defaults.

  @root Path.expand("../../..", __DIR__)

  defstruct invoker: :auto,
            python_executable: nil,
            python_path: [],
            timeout_ms: 600_000,
            notify: nil,
            max_concurrent_jobs: 1,
            data_root: nil

  @type t :: %__MODULE__{}

  # What each option must be (checked by valid?/2).
  @expected [
    invoker: ":auto, :pythonx or :subprocess",
    python_executable: "a string",
    python_path: "a string or a list of strings",
    timeout_ms: "a positive integer or :infinity",
    notify: "a pid",
    max_concurrent_jobs: "an integer from 1 to 64",
    data_root: "a string"
  ]
  @keys Keyword.keys(@expected)

  # Splits call options (a keyword list, or a map: atom keys that are bridge options
  # are the bridge's, every other key goes to Python) into {config, python_opts}.
  @spec split(keyword() | map()) :: {t(), map()}
  def split(opts) do
    {bridge, python} =
      if is_map(opts), do: Map.split(opts, @keys), else: Keyword.split(opts, @keys)

    {resolve(Enum.to_list(bridge)), Map.new(python)}
  end

  @spec resolve(keyword()) :: t()
  def resolve(opts) do
    opts = Keyword.validate!(opts, @keys)
    env = Application.get_all_env(:cerebros_bridge) |> Keyword.take(@keys -- [:notify])

    defaults = [
      python_executable: default_python(),
      python_path: default_python_path(),
      data_root: default_data_root()
    ]

    config = struct!(__MODULE__, defaults |> Keyword.merge(env) |> Keyword.merge(opts))
    config = %{config | python_path: List.wrap(config.python_path)}

    for {key, expected} <- @expected, not valid?(key, Map.fetch!(config, key)) do
      raise ArgumentError,
            "option #{inspect(key)} must be #{expected}, got: #{inspect(Map.fetch!(config, key))}"
    end

    %{
      config
      | python_path: Enum.map(config.python_path, &Path.expand/1),
        data_root: Path.expand(config.data_root)
    }
  end

  defp valid?(:invoker, value), do: value in [:auto, :pythonx, :subprocess]
  defp valid?(:python_path, value), do: Enum.all?(value, &is_binary/1)
  defp valid?(:timeout_ms, value), do: value == :infinity or (is_integer(value) and value > 0)
  defp valid?(:notify, value), do: value == nil or is_pid(value)
  defp valid?(:max_concurrent_jobs, value), do: value in 1..64
  defp valid?(_string_option, value), do: is_binary(value)

  # CEREBROS_PYTHON, else this checkout's virtual environment, else python3.
  defp default_python do
    venv = Path.join(@root, ".venv/bin/python")
    System.get_env("CEREBROS_PYTHON") || if(File.exists?(venv), do: venv, else: "python3")
  end

  # The directory holding the `cerebros_service` package, when this checkout has it.
  defp default_python_path,
    do: if(File.exists?(Path.join(@root, "cerebros_service/__init__.py")), do: [@root], else: [])

  # Python's own default: the operator's data root, else its working directory.
  defp default_data_root, do: System.get_env("CEREBROS_DATA_ROOT") || File.cwd!()
end
