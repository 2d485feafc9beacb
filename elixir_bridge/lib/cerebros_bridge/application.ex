defmodule CerebrosBridge.Application do
  @moduledoc false
  # The subprocess pool and its workers. Nothing starts Python until the first
  # call that needs it.

  use Application

  @impl true
  def start(_type, _args) do
    # rest_for_one: a restarted pool starts with a fresh worker supervisor, so
    # no worker outlives the pool that knew it (workers kill their OS process
    # when they stop).
    children = [
      CerebrosBridge.Subprocess.Pool,
      {DynamicSupervisor, name: CerebrosBridge.WorkerSupervisor, strategy: :one_for_one}
    ]

    Supervisor.start_link(children, strategy: :rest_for_one, name: CerebrosBridge.Supervisor)
  end
end
