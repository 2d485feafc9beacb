defmodule CerebrosBridge.Error do
  @moduledoc """
  The error returned (never raised) by the `CerebrosBridge` functions.

  `type` says what kind of failure it is:

    * reported by the service, from a failed result's `error_type`:
      `:validation_error`, `:dataset_error`, `:search_failed`, `:internal_error`,
      `:worker_crashed` (the worker process running the search died),
      `:queue_full` (an unknown `error_type` stays a string); `details` is the
      result's `error_details`, a list of maps with `"loc"` (the path to the
      offending value) and `"message"`;
    * of the bridge itself: `:timeout` (the job was cancelled), `:worker_crashed`
      (the `serve` process exited), `:python_error` (a Python exception reached
      Pythonx), `:invalid_result` (an answer that could not be decoded),
      `:not_running` (the job has already ended), `:unavailable` (the invoker
      cannot run here); `details` is a map with what is known.
  """

  defexception [:type, :message, details: []]

  @type t :: %__MODULE__{type: atom() | String.t(), message: String.t(), details: [map()] | map()}

  @service_types Map.new(
                   ~w(validation_error dataset_error search_failed internal_error worker_crashed queue_full)a,
                   &{Atom.to_string(&1), &1}
                 )

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
