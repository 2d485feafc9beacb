defmodule CerebrosBridge.JSON do
  @moduledoc false
  # JSON for the bridge: Elixir's own `JSON` (1.18+) where it exists; on older Elixir
  # (Debian's 1.14, which CI uses) the small codec below. Both are run over the same
  # test cases (json_test.exs).
  #
  # encode: maps (string or atom keys), lists, tuples and MapSets (as arrays),
  # strings (must be UTF-8), atoms, numbers, nil/true/false. decode: objects → maps
  # with string keys, integers of any size → integers, fractions/exponents → floats.

  @native Code.ensure_loaded?(JSON) and function_exported?(JSON, :decode, 1)

  @spec encode(term()) :: {:ok, String.t()} | {:error, term()}
  def encode(term) do
    term = plain(term)
    {:ok, if(@native, do: apply(JSON, :encode!, [term]), else: IO.iodata_to_binary(enc(term)))}
  catch
    {:json_error, reason} -> {:error, reason}
  end

  @spec encode!(term()) :: String.t()
  def encode!(term) do
    case encode(term) do
      {:ok, json} -> json
      {:error, reason} -> raise ArgumentError, "cannot encode as JSON: #{inspect(reason)}"
    end
  end

  @spec decode(binary()) :: {:ok, term()} | {:error, term()}
  def decode(binary) when is_binary(binary) do
    if @native, do: apply(JSON, :decode, [binary]), else: decode_own(binary)
  rescue
    error -> {:error, error}
  end

  # JSON-shaped terms: tuples and sets become lists, keys strings; binaries that are
  # not UTF-8 are refused here (the built-in encoder would write them as they are).
  defp plain(%MapSet{} = set), do: Enum.map(set, &plain/1)
  defp plain(%_{} = struct), do: fail({:unsupported_struct, struct.__struct__})
  defp plain(map) when is_map(map), do: Map.new(map, fn {k, v} -> {key(k), plain(v)} end)
  defp plain(list) when is_list(list), do: plain_list(list, list, [])
  defp plain(tuple) when is_tuple(tuple), do: tuple |> Tuple.to_list() |> plain()

  defp plain(bin) when is_binary(bin),
    do: if(String.valid?(bin), do: bin, else: fail({:invalid_utf8, bin}))

  defp plain(other) when is_atom(other) or is_number(other), do: other
  defp plain(other), do: fail({:unsupported_term, other})

  defp plain_list([], _list, acc), do: Enum.reverse(acc)
  defp plain_list([head | tail], list, acc), do: plain_list(tail, list, [plain(head) | acc])
  defp plain_list(_improper, list, _acc), do: fail({:improper_list, list})

  defp key(key) when is_binary(key), do: plain(key)
  defp key(key) when is_atom(key) and key not in [nil, true, false], do: Atom.to_string(key)
  defp key(key) when is_integer(key), do: Integer.to_string(key)
  defp key(key), do: fail({:unsupported_key, key})

  defp fail(reason), do: throw({:json_error, reason})

  # --- the fallback encoder, over plain terms ----------------------------------

  defp enc(nil), do: "null"
  defp enc(atom) when is_boolean(atom), do: Atom.to_string(atom)
  defp enc(atom) when is_atom(atom), do: enc(Atom.to_string(atom))
  defp enc(int) when is_integer(int), do: Integer.to_string(int)
  defp enc(float) when is_float(float), do: Float.to_string(float)

  defp enc(bin) when is_binary(bin),
    do: [?", Enum.map(String.codepoints(bin), &escape_char/1), ?"]

  defp enc(list) when is_list(list), do: [?[, Enum.intersperse(Enum.map(list, &enc/1), ?,), ?]]

  defp enc(map),
    do: [?{, Enum.intersperse(Enum.map(map, fn {k, v} -> [enc(k), ?:, enc(v)] end), ?,), ?}]

  defp escape_char("\""), do: "\\\""
  defp escape_char("\\"), do: "\\\\"
  defp escape_char("\n"), do: "\\n"

  defp escape_char(<<c>>) when c < 0x20,
    do: "\\u" <> String.pad_leading(Integer.to_string(c, 16), 4, "0")

  defp escape_char(char), do: char

  # --- the fallback decoder: tokens, then a recursive descent over them ----------

  @token ~r/\G[ \t\n\r]*(?:([{}\[\]:,])|"((?:[^"\\\x00-\x1f]|\\["\\\/bfnrtu])*)"|(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)|(true|false|null))/
  @escape ~r/\\(?:u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|(.))/
  @escapes %{
    "\"" => "\"",
    "\\" => "\\",
    "/" => "/",
    "b" => "\b",
    "f" => "\f",
    "n" => "\n",
    "r" => "\r",
    "t" => "\t"
  }

  @doc false
  @spec decode_own(binary()) :: {:ok, term()} | {:error, term()}
  def decode_own(binary) do
    if not String.valid?(binary), do: fail(:invalid_utf8)

    case value(tokens(binary, 0, [])) do
      {value, []} -> {:ok, value}
      {_, [token | _]} -> fail({:unexpected, token})
    end
  catch
    {:json_error, reason} -> {:error, reason}
  end

  defp tokens(bin, at, acc) do
    case Regex.run(@token, bin, offset: at, return: :index) do
      [{^at, length} | groups] ->
        tokens(bin, at + length, [token(bin, groups) | acc])

      _ ->
        if String.trim(binary_part(bin, at, byte_size(bin) - at)) == "",
          do: Enum.reverse(acc),
          else: fail({:unexpected_at, at})
    end
  end

  defp token(bin, groups) do
    case Enum.find_index(groups, &(&1 != {-1, 0})) do
      0 ->
        {:punct, part(bin, Enum.at(groups, 0))}

      1 ->
        {:string, unescape(part(bin, Enum.at(groups, 1)))}

      2 ->
        {:number, number(part(bin, Enum.at(groups, 2)))}

      3 ->
        {:literal,
         %{"true" => true, "false" => false, "null" => nil}[part(bin, Enum.at(groups, 3))]}

      nil ->
        fail(:unexpected_token)
    end
  end

  defp part(bin, {at, length}), do: binary_part(bin, at, length)

  defp value([{:punct, "{"}, {:punct, "}"} | rest]), do: {%{}, rest}
  defp value([{:punct, "{"} | rest]), do: members(rest, %{})
  defp value([{:punct, "["}, {:punct, "]"} | rest]), do: {[], rest}
  defp value([{:punct, "["} | rest]), do: elements(rest, [])
  defp value([{kind, value} | rest]) when kind in [:string, :number, :literal], do: {value, rest}
  defp value(tokens), do: fail({:unexpected, List.first(tokens, :end)})

  defp members([{:string, key}, {:punct, ":"} | rest], acc) do
    case value(rest) do
      {value, [{:punct, ","} | rest]} -> members(rest, Map.put(acc, key, value))
      {value, [{:punct, "}"} | rest]} -> {Map.put(acc, key, value), rest}
      {_, rest} -> fail({:unexpected, List.first(rest, :end)})
    end
  end

  defp members(tokens, _acc), do: fail({:unexpected, List.first(tokens, :end)})

  defp elements(tokens, acc) do
    case value(tokens) do
      {value, [{:punct, ","} | rest]} -> elements(rest, [value | acc])
      {value, [{:punct, "]"} | rest]} -> {Enum.reverse([value | acc]), rest}
      {_, rest} -> fail({:unexpected, List.first(rest, :end)})
    end
  end

  defp unescape(text) do
    Regex.replace(@escape, text, fn
      _, high, low, "", "" when high != "" ->
        <<0x10000 + Bitwise.bsl(hex(high) - 0xD800, 10) + (hex(low) - 0xDC00)::utf8>>

      _, _, _, code, "" when code != "" ->
        if hex(code) in 0xD800..0xDFFF, do: fail(:lone_surrogate), else: <<hex(code)::utf8>>

      _, _, _, _, char ->
        Map.get(@escapes, char) || fail({:invalid_escape, char})
    end)
  end

  defp hex(digits), do: String.to_integer(digits, 16)

  defp number(text) do
    if text =~ ~r/[.eE]/ do
      case Float.parse(text) do
        {float, ""} -> float
        _ -> fail({:number_out_of_range, text})
      end
    else
      String.to_integer(text)
    end
  end
end
