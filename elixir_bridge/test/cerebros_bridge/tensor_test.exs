defmodule CerebrosBridge.TensorTest do
  use ExUnit.Case, async: true

  alias CerebrosBridge.Tensor
  import CerebrosBridge.Test.OS, only: [tmp_dir: 1]

  setup :tmp_dir

  test "tuples and Nx tensors become buffers with numpy dtype names" do
    assert Tensor.to_buffer({<<0, 0, 128, 63>>, :f32, {1, 1}}) == %{
             "data" => <<0, 0, 128, 63>>,
             "dtype" => "float32",
             "shape" => [1, 1]
           }

    assert Tensor.to_buffer({<<1>>, {:u, 8}, [1]})["dtype"] == "uint8"
    assert Tensor.to_buffer({<<1::64>>, "int64", {1}})["dtype"] == "int64"

    assert Tensor.to_buffer(%Nx.Tensor{data: <<1::16>>, type: {:s, 16}, shape: {1}})["dtype"] ==
             "int16"

    assert Tensor.to_buffer([[1, 2]]) == [[1, 2]]

    assert_raise ArgumentError, ~r/unknown dtype :bf16/, fn ->
      Tensor.to_buffer({<<>>, :bf16, {0}})
    end

    assert_raise ArgumentError, ~r/Nx tensor/, fn -> Tensor.to_buffer(:rows) end
  end

  test "write_npy! writes an .npy 1.0 header aligned to 64 bytes, then the data", %{tmp_dir: dir} do
    for {shape, dims} <- [{[2, 3], "(2, 3)"}, {[5], "(5,)"}] do
      path = Path.join(dir, "a.npy")
      data = :binary.copy(<<0, 0, 128, 63>>, Enum.product(shape))
      Tensor.write_npy!(path, %{"data" => data, "dtype" => "float32", "shape" => shape})

      <<0x93, "NUMPY", 1, 0, length::little-16, header::binary-size(length), rest::binary>> =
        File.read!(path)

      assert rem(10 + length, 64) == 0 and String.ends_with?(header, "\n")
      assert header =~ "'descr': '<f4', 'fortran_order': False, 'shape': #{dims}, }"
      assert rest == data
    end
  end
end
