defmodule CerebrosBridge.Config do
  @moduledoc false
  # Per-call options over `config :cerebros_bridge, ...` over defaults.

  @root Path.expand("../../..", __DIR__)

  @keys [:invoker, :python_executable, :python_path, :timeout_ms, :pool, :pool_size, :notify]

  defstruct invoker: :auto,
            python_executable: nil,
            python_path: [],
            timeout_ms: 600_000,
            pool: true,
            pool_size: 2,
            notify: nil

  @type t :: %__MODULE__{
          invoker: :auto | :pythonx | :subprocess,
          python_executable: String.t(),
          python_path: [String.t()],
          timeout_ms: pos_integer() | :infinity,
          pool: boolean(),
          pool_size: pos_integer(),
          notify: pid() | nil
        }

  @doc false
  @spec keys() :: [atom()]
  def keys, do: @keys

  @doc false
  # `opts` holds only bridge options (already split from the Python opts).
  @spec resolve(keyword()) :: t()
  def resolve(opts) do
    opts = Keyword.validate!(opts, @keys)
    env = Application.get_all_env(:cerebros_bridge)

    get = fn key, default ->
      case Keyword.fetch(opts, key) do
        {:ok, value} -> value
        :error -> Keyword.get_lazy(env, key, default)
      end
    end

    %__MODULE__{
      invoker: get.(:invoker, fn -> :auto end),
      python_executable: get.(:python_executable, &default_python/0),
      python_path: get.(:python_path, &default_python_path/0),
      timeout_ms: get.(:timeout_ms, fn -> 600_000 end),
      pool: get.(:pool, fn -> true end),
      pool_size: get.(:pool_size, fn -> 2 end),
      notify: Keyword.get(opts, :notify)
    }
    |> check!()
  end

  defp check!(%__MODULE__{} = c) do
    check(
      c.invoker in [:auto, :pythonx, :subprocess],
      :invoker,
      c.invoker,
      ":auto, :pythonx or :subprocess"
    )

    check(is_binary(c.python_executable), :python_executable, c.python_executable, "a string")

    check(
      c.timeout_ms == :infinity or (is_integer(c.timeout_ms) and c.timeout_ms > 0),
      :timeout_ms,
      c.timeout_ms,
      "a positive integer or :infinity"
    )

    check(is_boolean(c.pool), :pool, c.pool, "a boolean")

    check(
      is_integer(c.pool_size) and c.pool_size > 0,
      :pool_size,
      c.pool_size,
      "a positive integer"
    )

    check(c.notify == nil or is_pid(c.notify), :notify, c.notify, "a pid")

    paths = List.wrap(c.python_path)

    check(
      Enum.all?(paths, &is_binary/1),
      :python_path,
      c.python_path,
      "a string or a list of strings"
    )

    %{c | python_path: Enum.map(paths, &Path.expand/1)}
  end

  defp check(true, _key, _value, _expected), do: :ok

  defp check(false, key, value, expected),
    do: raise(ArgumentError, "option #{inspect(key)} must be #{expected}, got: #{inspect(value)}")

  # CEREBROS_PYTHON, else this checkout's virtual environment, else python3.
  defp default_python do
    venv = Path.join(@root, ".venv/bin/python")

    cond do
      python = System.get_env("CEREBROS_PYTHON") -> python
      File.exists?(venv) -> venv
      true -> "python3"
    end
  end

  # The directory holding the `cerebros_service` package, when this checkout has it.
  defp default_python_path do
    if File.exists?(Path.join(@root, "cerebros_service/__init__.py")), do: [@root], else: []
  end
end
