defmodule CerebrosBridge.Error do
  @moduledoc """
  The error returned (never raised) by `CerebrosBridge.run_nas/2` and
  `CerebrosBridge.validate/2`.

  `type` says what kind of failure it is:

    * a failure reported by the service, from the result's `error_type`:
      `:validation_error`, `:dataset_error`, `:search_failed`,
      `:internal_error` (an unknown `error_type` stays a string);
      `details` is the result's `error_details`, a list of maps with
      `"loc"` (the path to the offending value) and `"message"`;
    * a failure of the bridge itself: `:timeout`, `:worker_crashed` (the
      Python process exited without answering), `:python_error` (a Python
      exception reached Pythonx), `:invalid_result` (an answer that could not
      be decoded, e.g. a NaN through Pythonx, or that is not a result),
      `:unavailable` (the chosen invoker cannot run here); `details` is a
      map with what is known, e.g. `"exit_status"` and `"stderr_tail"`.
  """

  defexception [:type, :message, details: []]

  @type t :: %__MODULE__{
          type: atom() | String.t(),
          message: String.t(),
          details: [map()] | map()
        }

  @service_types %{
    "validation_error" => :validation_error,
    "dataset_error" => :dataset_error,
    "search_failed" => :search_failed,
    "internal_error" => :internal_error
  }

  @doc false
  @spec new(atom() | String.t(), String.t(), [map()] | map()) :: t()
  def new(type, message, details \\ %{}),
    do: %__MODULE__{type: type, message: message, details: details}

  @doc false
  # A `"status" => "failed"` result as an error.
  @spec from_result(map()) :: t()
  def from_result(result) do
    type = Map.get(result, "error_type", "internal_error")

    %__MODULE__{
      type: Map.get(@service_types, type, type),
      message: Map.get(result, "error") || Map.get(result, "message") || "the run failed",
      details: Map.get(result, "error_details") || []
    }
  end

  @impl true
  def message(%__MODULE__{type: type, message: message}), do: "#{type}: #{message}"
end
