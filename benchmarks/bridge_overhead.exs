# Per-call overhead of the bridge's two invokers, and what a result costs to decode.
#
#     mix run benchmarks/bridge_overhead.exs                  # subprocess column only
#     BENCH_N=500 mix run benchmarks/bridge_overhead.exs
#
# The Pythonx column needs real Pythonx: run it with the lab's Elixir and
# PYTHONX_LAB / PYX_PYTHON_HOME exported (see the Makefile's test-pythonx target):
#
#     PATH=$PYTHONX_LAB/elixir-src/bin:$PATH MIX_HOME=$PYTHONX_LAB/mix_home \
#       HEX_HOME=$PYTHONX_LAB/hex_home HEX_OFFLINE=1 mix run benchmarks/bridge_overhead.exs
#
# `validate` and `ping` never import TensorFlow, so the figures are the bridge's own
# cost: one protocol round trip (subprocess: a JSON line each way to a warm `serve`;
# Pythonx: one eval answering orjson bytes, decoded in Elixir).

defmodule BridgeOverhead do
  def measure(n, fun) do
    times =
      for _ <- 1..n do
        {micros, _} = :timer.tc(fun)
        micros / 1000
      end

    sorted = Enum.sort(times)
    at = fn q -> Enum.at(sorted, min(n - 1, round(q * (n - 1)))) end
    %{n: n, median: at.(0.5), p90: at.(0.9), min: hd(sorted)}
  end

  def report(name, %{n: n, median: median, p90: p90, min: min}),
    do:
      :io.format("~-52s n=~4B  median ~8.3f ms  p90 ~8.3f ms  min ~8.3f ms~n", [
        name,
        n,
        median,
        p90,
        min
      ])

  def ok!({:ok, value}), do: value
end

n = String.to_integer(System.get_env("BENCH_N", "200"))
spec = %{dataset_id: "iris", training: %{epochs: 1}}

IO.puts(
  "Elixir #{System.version()} / OTP #{System.otp_release()}, #{System.schedulers_online()} schedulers, n=#{n}\n"
)

# --- subprocess: a warm `serve` process ---------------------------------------------
# data_root: where the subprocess invoker writes register_dataset's .npy files.
sub = [invoker: :subprocess, data_root: System.tmp_dir!()]
BridgeOverhead.ok!(CerebrosBridge.ping(sub))

BridgeOverhead.report(
  "subprocess validate (warm serve)",
  BridgeOverhead.measure(n, fn -> CerebrosBridge.validate(spec, sub) end)
)

BridgeOverhead.report(
  "subprocess ping (warm serve)",
  BridgeOverhead.measure(n, fn -> CerebrosBridge.ping(sub) end)
)

x = for i <- 1..(5000 * 64), into: <<>>, do: <<:math.sin(i)::float-32-native>>
y = for i <- 1..5000, into: <<>>, do: <<rem(i, 3)::signed-64-native>>

register = fn opts ->
  CerebrosBridge.register_dataset(
    "bench",
    {x, :f32, {5000, 64}},
    {y, :s64, {5000}},
    [replace: true] ++ opts
  )
end

BridgeOverhead.report(
  "subprocess register_dataset 5000x64 f32 (.npy)",
  BridgeOverhead.measure(10, fn -> register.(sub) end)
)

# --- Pythonx ---------------------------------------------------------------------------
home = System.get_env("PYX_PYTHON_HOME")

if Code.ensure_loaded?(Pythonx) and home do
  root = File.cwd!()
  [libpython | _] = Path.wildcard(Path.join(home, "lib/libpython3.*.so"))
  version = libpython |> Path.basename(".so") |> String.trim_leading("libpython")
  site = Path.wildcard(Path.join(root, ".venv/lib/python#{version}/site-packages"))

  :ok =
    Pythonx.init(libpython, home, Path.join(home, "bin/python#{version}"),
      sys_paths: [root | site]
    )

  px = [invoker: :pythonx]
  BridgeOverhead.ok!(CerebrosBridge.ping(px))

  BridgeOverhead.report(
    "pythonx validate",
    BridgeOverhead.measure(n, fn -> CerebrosBridge.validate(spec, px) end)
  )

  BridgeOverhead.report(
    "pythonx ping",
    BridgeOverhead.measure(n, fn -> CerebrosBridge.ping(px) end)
  )

  BridgeOverhead.report(
    "pythonx raw eval of None",
    BridgeOverhead.measure(n, fn -> Pythonx.eval("None", %{}) end)
  )

  BridgeOverhead.report(
    "pythonx register_dataset 5000x64 f32 (bytes)",
    BridgeOverhead.measure(10, fn -> register.(px) end)
  )

  # How a result crosses: one orjson bytes object decoded by JSON (what the bridge
  # does), or the dict decoded object by object with Pythonx.decode/1. The result of
  # a real (tiny) search, the shape every run_nas answer has.
  {:ok, result} =
    CerebrosBridge.run_nas(spec, px ++ [budget: %{max_trials: 2, population_size: 2}])

  {:ok, json} = CerebrosBridge.JSON.encode(result)
  {_, globals} = Pythonx.eval("import orjson\nresult = orjson.loads(text)", %{"text" => json})

  IO.puts(
    "\nsearch result used for decoding: #{map_size(result)} top-level keys, #{byte_size(json)} bytes of JSON"
  )

  BridgeOverhead.report(
    "decode: orjson bytes + JSON.decode",
    BridgeOverhead.measure(n, fn ->
      {bytes, _} = Pythonx.eval("orjson.dumps(result)", globals)
      {:ok, _} = CerebrosBridge.JSON.decode(Pythonx.decode(bytes))
    end)
  )

  BridgeOverhead.report(
    "decode: dict + Pythonx.decode",
    BridgeOverhead.measure(n, fn ->
      {object, _} = Pythonx.eval("result", globals)
      Pythonx.decode(object)
    end)
  )
else
  IO.puts(
    "\nPythonx column skipped: Pythonx is not loaded or PYX_PYTHON_HOME is unset (see the header)."
  )
end
