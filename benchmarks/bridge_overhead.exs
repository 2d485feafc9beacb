# Per-call overhead of the subprocess invoker: one-shot process per call vs a
# warm `serve` worker from the pool. `validate` calls (they never import
# TensorFlow), so the figures are the bridge's cost plus Python's start-up
# (one-shot) or one request line round trip (pool), not a search.
#
#     mix run benchmarks/bridge_overhead.exs
#     BENCH_ONE_SHOT=20 BENCH_POOL=200 mix run benchmarks/bridge_overhead.exs
#
# Python: $CEREBROS_PYTHON, else .venv/bin/python, else python3.

defmodule BridgeOverhead do
  def measure(n, fun) do
    times =
      for _ <- 1..n do
        {micros, result} = :timer.tc(fun)
        {:ok, _} = result
        micros / 1000
      end

    sorted = Enum.sort(times)

    %{
      n: n,
      median: percentile(sorted, 0.5),
      p90: percentile(sorted, 0.9),
      min: hd(sorted),
      max: List.last(sorted)
    }
  end

  defp percentile(sorted, q),
    do: Enum.at(sorted, min(length(sorted) - 1, round(q * (length(sorted) - 1))))

  def report(name, stats) do
    :io.format("~-34s n=~4B  median ~9.2f ms  p90 ~9.2f ms  min ~9.2f ms  max ~9.2f ms~n", [
      name,
      stats.n,
      stats.median,
      stats.p90,
      stats.min,
      stats.max
    ])
  end
end

env_int = fn name, default -> String.to_integer(System.get_env(name, "#{default}")) end
one_shot_n = env_int.("BENCH_ONE_SHOT", 15)
pool_n = env_int.("BENCH_POOL", 200)

spec = %{dataset_id: "iris", training: %{epochs: 1}}
opts = [invoker: :subprocess, budget: %{max_trials: 1, population_size: 2}]

IO.puts("Python: #{CerebrosBridge.Config.resolve([]).python_executable}")

IO.puts(
  "Elixir #{System.version()} / OTP #{System.otp_release()}, #{System.schedulers_online()} schedulers\n"
)

one_shot =
  BridgeOverhead.measure(one_shot_n, fn ->
    CerebrosBridge.validate(spec, [pool: false] ++ opts)
  end)

BridgeOverhead.report("one-shot validate (new process)", one_shot)

# The first pool call starts the worker; measure warm calls only.
{:ok, _} = CerebrosBridge.validate(spec, [pool: true, pool_size: 1] ++ opts)

pool =
  BridgeOverhead.measure(pool_n, fn ->
    CerebrosBridge.validate(spec, [pool: true, pool_size: 1] ++ opts)
  end)

BridgeOverhead.report("warm pool validate (serve worker)", pool)

ping = BridgeOverhead.measure(pool_n, fn -> CerebrosBridge.ping(pool_size: 1) end)
BridgeOverhead.report("warm pool ping", ping)

:io.format("~nwarm pool saves ~.1f ms a call (one-shot is ~.1fx slower)~n", [
  one_shot.median - pool.median,
  one_shot.median / pool.median
])
