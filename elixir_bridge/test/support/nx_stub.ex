# A stand-in for the three `Nx` functions the bridge calls on a tensor (to_binary/1,
# type/1, shape/1), compiled only where the real package is not loaded (it cannot be
# fetched here).
unless Code.ensure_loaded?(Nx) do
  defmodule Nx.Tensor do
    @moduledoc false
    defstruct [:data, :type, :shape]
  end

  defmodule Nx do
    @moduledoc false
    def to_binary(%Nx.Tensor{data: data}), do: data
    def type(%Nx.Tensor{type: type}), do: type
    def shape(%Nx.Tensor{shape: shape}), do: shape
  end
end
