defmodule CerebrosBridge.Config do
  @moduledoc false
  # Bridge options: per call, over `config :cerebros_bridge, ...`, over defaults; and
  # the operator's settings (`data_root`, `artifacts_root`, `limits`, `dask_clusters`,
  # `mlflow_servers`), which only the application config sets: a call cannot name them
  # (Keyword.validate! refuses them).

  @root Path.expand("../../..", __DIR__)

  defstruct invoker: :auto,
            python_executable: nil,
            python_path: [],
            timeout_ms: 600_000,
            notify: nil,
            max_concurrent_jobs: 1,
            data_root: nil,
            artifacts_root: nil,
            limits: %{},
            dask_clusters: %{},
            mlflow_servers: %{}

  @type t :: %__MODULE__{}

  # What each per-call option must be (checked by valid?/2).
  @expected [
    invoker: ":auto, :pythonx or :subprocess",
    python_executable: "a string",
    python_path: "a string or a list of strings",
    timeout_ms: "a positive integer or :infinity",
    notify: "a pid",
    max_concurrent_jobs: "an integer from 1 to 64"
  ]
  @keys Keyword.keys(@expected)

  # The limits of cerebros_service/operator_config.py (`Limits`), each set in Python as
  # CEREBROS_<NAME upper-cased>; a :python test checks this list against Python's.
  @limit_names ~w(max_file_bytes max_npz_member_bytes max_csv_line_bytes max_cells
                  max_candidate_params max_fused_params max_error_details)

  @doc false
  def limit_names, do: @limit_names

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
    defaults = [python_executable: default_python(), python_path: default_python_path()]

    config = struct!(__MODULE__, defaults |> Keyword.merge(env) |> Keyword.merge(opts))
    config = %{config | python_path: List.wrap(config.python_path)}

    for {key, expected} <- @expected, not valid?(key, Map.fetch!(config, key)) do
      raise ArgumentError,
            "option #{inspect(key)} must be #{expected}, got: #{inspect(Map.fetch!(config, key))}"
    end

    %{
      config
      | python_path: Enum.map(config.python_path, &Path.expand/1),
        data_root: root(:data_root, System.get_env("CEREBROS_DATA_ROOT")),
        artifacts_root: root(:artifacts_root, nil),
        limits: limits(Application.get_env(:cerebros_bridge, :limits, %{})),
        dask_clusters: endpoints(:dask_clusters),
        mlflow_servers: endpoints(:mlflow_servers)
    }
  end

  # The operator's settings that are set, for Python's operator_config.configure/3.
  @spec operator(t()) :: map()
  def operator(config) do
    %{"data_root" => config.data_root, "artifacts_root" => config.artifacts_root}
    |> Map.reject(fn {_key, value} -> is_nil(value) end)
    |> then(&if config.limits == %{}, do: &1, else: Map.put(&1, "limits", config.limits))
    |> put_unless_empty("dask_clusters", config.dask_clusters)
    |> put_unless_empty("mlflow_servers", config.mlflow_servers)
  end

  # %{"gpu" => "tcp://10.0.0.5:8786"} as `serve`'s flag value: "gpu=tcp://10.0.0.5:8786,…".
  @spec endpoint_list(map()) :: String.t()
  def endpoint_list(endpoints),
    do: Enum.map_join(Enum.sort(endpoints), ",", fn {name, url} -> "#{name}=#{url}" end)

  defp put_unless_empty(map, _key, endpoints) when map_size(endpoints) == 0, do: map
  defp put_unless_empty(map, key, endpoints), do: Map.put(map, key, endpoints)

  defp valid?(:invoker, value), do: value in [:auto, :pythonx, :subprocess]
  defp valid?(:python_path, value), do: Enum.all?(value, &is_binary/1)
  defp valid?(:timeout_ms, value), do: value == :infinity or (is_integer(value) and value > 0)
  defp valid?(:notify, value), do: value == nil or is_pid(value)
  defp valid?(:max_concurrent_jobs, value), do: value in 1..64
  defp valid?(_string_option, value), do: is_binary(value)

  # A root from the application config (else `fallback`), as an absolute path.
  defp root(key, fallback) do
    case Application.get_env(:cerebros_bridge, key) || fallback do
      nil ->
        nil

      path when is_binary(path) and path != "" ->
        Path.expand(path)

      other ->
        raise ArgumentError,
              "config :cerebros_bridge, #{inspect(key)} must be a folder's path (a string), got: #{inspect(other)}"
    end
  end

  # %{"max_file_bytes" => 1_000_000, ...} from a map or keyword list with atom or string keys.
  defp limits(limits) when is_map(limits) or is_list(limits) do
    Map.new(limits, fn
      {name, value} when (is_atom(name) or is_binary(name)) and is_integer(value) and value > 0 ->
        name = to_string(name)

        unless name in @limit_names do
          raise ArgumentError,
                "config :cerebros_bridge, :limits: unknown limit #{inspect(name)}; known: #{Enum.join(@limit_names, ", ")}"
        end

        {name, value}

      other ->
        raise ArgumentError,
              "config :cerebros_bridge, :limits: each entry must be a limit's name and a positive integer, got: #{inspect(other)}"
    end)
  end

  defp limits(other),
    do:
      raise(
        ArgumentError,
        "config :cerebros_bridge, :limits must be a map or keyword list, got: #{inspect(other)}"
      )

  # The Dask clusters or MLflow servers a request may pick by name, as
  # %{"name" => "url"} from a map or keyword list with atom or string names; Python
  # checks each URL's form (operator_config.py), the bridge the shape of the list.
  defp endpoints(key) do
    case Application.get_env(:cerebros_bridge, key, %{}) do
      endpoints when is_map(endpoints) or is_list(endpoints) ->
        Enum.map(endpoints, fn
          {name, url} when (is_atom(name) or is_binary(name)) and is_binary(url) ->
            name = to_string(name)

            unless name =~ ~r/\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\z/ do
              raise ArgumentError,
                    "config :cerebros_bridge, #{inspect(key)}: a name must be 1-64 letters, digits, '_', '.' or '-', got: #{inspect(name)}"
            end

            unless url =~ ~r/\A[^\s,]+\z/ do
              raise ArgumentError,
                    "config :cerebros_bridge, #{inspect(key)}: the URL of #{inspect(name)} must hold no spaces or commas, got: #{inspect(url)}"
            end

            {name, url}

          other ->
            raise ArgumentError,
                  "config :cerebros_bridge, #{inspect(key)}: each entry must be a name and a URL (a string), got: #{inspect(other)}"
        end)
        |> Enum.reduce(%{}, fn {name, url}, acc ->
          if Map.has_key?(acc, name) do
            raise ArgumentError,
                  "config :cerebros_bridge, #{inspect(key)}: names #{inspect(name)} twice"
          end

          Map.put(acc, name, url)
        end)

      other ->
        raise ArgumentError,
              "config :cerebros_bridge, #{inspect(key)} must be a map or keyword list of name => URL, got: #{inspect(other)}"
    end
  end

  # CEREBROS_PYTHON, else this checkout's virtual environment, else python3.
  defp default_python do
    venv = Path.join(@root, ".venv/bin/python")
    System.get_env("CEREBROS_PYTHON") || if(File.exists?(venv), do: venv, else: "python3")
  end

  # The directory holding the `cerebros_service` package, when this checkout has it.
  defp default_python_path,
    do: if(File.exists?(Path.join(@root, "cerebros_service/__init__.py")), do: [@root], else: [])
end
