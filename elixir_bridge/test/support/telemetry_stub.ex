# A stand-in for the `:telemetry` API the tests use (attach_many/4, detach/1,
# execute/3), compiled only where the real package is not loaded (here it
# cannot be fetched).
unless Code.ensure_loaded?(:telemetry) do
  defmodule :telemetry do
    @moduledoc false

    def attach_many(id, events, fun, config) do
      :persistent_term.put(
        {__MODULE__, :handlers},
        Map.put(handlers(), id, {events, fun, config})
      )

      :ok
    end

    def detach(id) do
      :persistent_term.put({__MODULE__, :handlers}, Map.delete(handlers(), id))
      :ok
    end

    def execute(event, measurements, metadata) do
      for {_id, {events, fun, config}} <- handlers(), event in events do
        fun.(event, measurements, metadata, config)
      end

      :ok
    end

    defp handlers, do: :persistent_term.get({__MODULE__, :handlers}, %{})
  end
end
