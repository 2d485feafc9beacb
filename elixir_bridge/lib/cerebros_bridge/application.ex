defmodule CerebrosBridge.Application do
  @moduledoc false
  # Nothing starts Python until the first call that needs it. Children stop in
  # reverse order: the jobs first (each cancels its search and waits for its
  # cancelled result, see JobServer), then the `serve` processes.

  use Application

  @impl true
  def start(_type, _args) do
    children = [
      {Registry, keys: :unique, name: CerebrosBridge.Registry},
      {DynamicSupervisor, name: CerebrosBridge.ServeSupervisor, strategy: :one_for_one},
      {DynamicSupervisor, name: CerebrosBridge.JobSupervisor, strategy: :one_for_one}
    ]

    Supervisor.start_link(children, strategy: :one_for_one, name: CerebrosBridge.Supervisor)
  end
end
