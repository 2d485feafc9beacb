defmodule CerebrosBridge.MixProject do
  use Mix.Project

  @version "0.1.0"

  def project do
    [
      app: :cerebros_bridge,
      version: @version,
      elixir: "~> 1.14",
      elixirc_paths: elixirc_paths(Mix.env()),
      test_paths: ["elixir_bridge/test"],
      # Real Pythonx (make test-pythonx) builds with the lab's Elixir in a folder of its own.
      build_path: if(lab(), do: "_build/pythonx_lab", else: "_build"),
      start_permanent: Mix.env() == :prod,
      deps: deps(),
      description:
        "Elixir bridge to cerebros-service (neural architecture search) via Pythonx or a Python subprocess",
      docs: [main: "CerebrosBridge", extras: ["docs/elixir.md"]]
    ]
  end

  def application do
    [
      mod: {CerebrosBridge.Application, []},
      extra_applications: [:logger]
    ]
  end

  defp elixirc_paths(:test), do: ["elixir_bridge/lib", "elixir_bridge/test/support"]
  defp elixirc_paths(_env), do: ["elixir_bridge/lib"]

  # Both dependencies are optional: the bridge compiles, and falls back to the
  # subprocess invoker and no-op telemetry, without them (it calls them only
  # through runtime checks, never at compile time).
  #
  # They are declared only when Hex is installed. Where Elixir comes from a
  # distribution package without Hex (as in CI, where hex.pm is unreachable
  # too), declaring a Hex dependency would make every `mix compile`/`mix test`
  # stop with "Could not find Hex" or "dependency not available". Checking for
  # the Hex archive itself, rather than an environment variable CI happens to
  # set, keeps working wherever the archive is missing, and a project that
  # depends on this one (with Hex, as every real user has) still sees the
  # optional dependencies and their version requirements.
  #
  # CEREBROS_BRIDGE_HEX_DEPS=0 drops them even with Hex installed (e.g. Hex is
  # installed but hex.pm is unreachable and nothing was fetched); =1 forces them.
  #
  # PYTHONX_LAB (the folder shared/pythonx-lab/build.sh made) puts real Pythonx and its
  # build dependencies in from source, for the :pythonx_real suite (make test-pythonx).
  defp deps do
    cond do
      lab = lab() ->
        for {name, runtime} <- [
              pythonx: true,
              fine: false,
              elixir_make: false,
              cc_precompiler: false
            ],
            do:
              {name, path: Path.join(lab, Atom.to_string(name)), override: true, runtime: runtime}

      hex_deps?() ->
        [
          {:pythonx, "~> 0.4", optional: true},
          {:telemetry, "~> 1.0", optional: true}
        ]

      true ->
        []
    end
  end

  defp lab, do: System.get_env("PYTHONX_LAB")

  defp hex_deps? do
    case System.get_env("CEREBROS_BRIDGE_HEX_DEPS") do
      "0" -> false
      "1" -> true
      _ -> Code.ensure_loaded?(Hex)
    end
  end
end
