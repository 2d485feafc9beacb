defmodule CerebrosBridge.Tensor do
  @moduledoc false
  # Arrays for `register_dataset` and `predict`: an `Nx.Tensor` (when Nx is loaded) or a
  # `{binary, dtype, shape}` tuple becomes `%{"data" => binary, "dtype" => "float32",
  # "shape" => [n, m]}`, read by Python with `np.frombuffer` (no copy); lists pass as
  # they are. dtype: an Nx type (`{:f, 32}`), its short atom (`:f32`, `:s64`, `:u8`) or
  # a numpy name (`"float32"`). The binary is in this machine's byte order, as in Nx.

  @kinds %{"f" => "float", "s" => "int", "u" => "uint"}

  @spec to_buffer(term()) :: map() | list()
  def to_buffer(%{__struct__: Nx.Tensor} = t),
    do: to_buffer({apply(Nx, :to_binary, [t]), apply(Nx, :type, [t]), apply(Nx, :shape, [t])})

  def to_buffer({data, dtype, shape}) when is_binary(data) and is_tuple(shape),
    do: to_buffer({data, dtype, Tuple.to_list(shape)})

  def to_buffer({data, dtype, shape}) when is_binary(data) and is_list(shape),
    do: %{"data" => data, "dtype" => dtype_name(dtype), "shape" => shape}

  def to_buffer(list) when is_list(list), do: list

  def to_buffer(other),
    do:
      raise(
        ArgumentError,
        "an array must be an Nx tensor, {binary, dtype, shape} or a list, got: #{inspect(other, limit: 5)}"
      )

  defp dtype_name({kind, bits}) when kind in [:f, :s, :u] and is_integer(bits),
    do: @kinds[Atom.to_string(kind)] <> "#{bits}"

  defp dtype_name(name) when is_binary(name), do: name

  defp dtype_name(atom) do
    case is_atom(atom) && Regex.run(~r/\A([fsu])(\d+)\z/, Atom.to_string(atom)) do
      [_, kind, bits] ->
        @kinds[kind] <> bits

      _ ->
        raise ArgumentError,
              "unknown dtype #{inspect(atom)}: use e.g. {:f, 32}, :f32 or \"float32\""
    end
  end

  # An .npy file (format 1.0) of a buffer, for Python to memory-map (subprocess invoker).
  @spec write_npy!(Path.t(), map()) :: :ok
  def write_npy!(path, %{"data" => data, "dtype" => dtype, "shape" => shape}) do
    dims =
      Enum.map_join(shape, ", ", &Integer.to_string/1) <>
        if(length(shape) == 1, do: ",", else: "")

    header = "{'descr': '#{descr(dtype)}', 'fortran_order': False, 'shape': (#{dims}), }"
    # The data starts at a multiple of 64 bytes: magic (6), version (2), length (2), header, "\n".
    header = header <> String.duplicate(" ", 63 - rem(10 + byte_size(header), 64)) <> "\n"
    File.write!(path, [<<0x93, "NUMPY", 1, 0, byte_size(header)::little-16>>, header, data])
  end

  defp descr("bool"), do: "|b1"

  defp descr(name) do
    case Regex.run(~r/\A(u?int|float)(\d+)\z/, name) do
      [_, kind, bits] ->
        bytes = div(String.to_integer(bits), 8)

        order =
          if bytes == 1, do: "|", else: if(System.endianness() == :little, do: "<", else: ">")

        order <> %{"int" => "i", "uint" => "u", "float" => "f"}[kind] <> "#{bytes}"

      nil ->
        raise ArgumentError, "cannot write dtype #{inspect(name)} as .npy"
    end
  end
end
