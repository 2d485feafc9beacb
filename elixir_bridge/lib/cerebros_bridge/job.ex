defmodule CerebrosBridge.Job do
  @moduledoc "A search started with `CerebrosBridge.start_nas/2`: its Python `id` and `run_id`."
  defstruct [:id, :run_id, :pid, :ref]
  @type t :: %__MODULE__{id: String.t(), run_id: String.t() | nil, pid: pid(), ref: reference()}
end
