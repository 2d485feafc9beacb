defmodule CerebrosBridge.JSON do
  @moduledoc false
  # A small JSON encoder and decoder (RFC 8259), so the bridge needs no Hex
  # package. Decoding uses Elixir's own `JSON` (1.18+) when it is there, and
  # this decoder otherwise; both are run over the same test cases. Encoding
  # always uses this encoder, so what the bridge sends does not depend on the
  # Elixir version (tuples and non-string map keys are accepted here).
  #
  # Decoding: objects → maps with string keys, arrays → lists, integers of
  # any size → integers, numbers with a fraction or exponent → floats,
  # true/false/null → true/false/nil. Errors are `{:error, reason}`.

  @native Code.ensure_loaded?(JSON) and function_exported?(JSON, :decode, 1)

  @doc false
  @spec decode(binary()) :: {:ok, term()} | {:error, term()}
  def decode(binary) when is_binary(binary) do
    if @native, do: native_decode(binary), else: decode_own(binary)
  end

  if @native do
    defp native_decode(binary) do
      case apply(JSON, :decode, [binary]) do
        {:ok, term} -> {:ok, term}
        {:error, reason} -> {:error, reason}
      end
    rescue
      # e.g. a number too large for a float
      error -> {:error, error}
    end
  else
    defp native_decode(binary), do: decode_own(binary)
  end

  @doc false
  # This module's own decoder, whatever the Elixir version (tested directly).
  @spec decode_own(binary()) :: {:ok, term()} | {:error, term()}
  def decode_own(binary) when is_binary(binary) do
    if String.valid?(binary) do
      {value, rest} = value(skip_ws(binary))

      case skip_ws(rest) do
        "" -> {:ok, value}
        <<c::utf8, _::binary>> -> {:error, {:unexpected, <<c::utf8>>}}
      end
    else
      {:error, :invalid_utf8}
    end
  catch
    {:json_error, reason} -> {:error, reason}
  end

  # --- decoding -------------------------------------------------------------

  defp fail(reason), do: throw({:json_error, reason})

  defp skip_ws(<<c, rest::binary>>) when c in [?\s, ?\t, ?\n, ?\r], do: skip_ws(rest)
  defp skip_ws(rest), do: rest

  defp value(<<?{, rest::binary>>), do: object(skip_ws(rest), %{})
  defp value(<<?[, rest::binary>>), do: array(skip_ws(rest), [])
  defp value(<<?", rest::binary>>), do: string(rest, [])
  defp value(<<"true", rest::binary>>), do: {true, rest}
  defp value(<<"false", rest::binary>>), do: {false, rest}
  defp value(<<"null", rest::binary>>), do: {nil, rest}
  defp value(<<c, _::binary>> = bin) when c == ?- or c in ?0..?9, do: number(bin)
  defp value(""), do: fail(:unexpected_end)
  defp value(<<c::utf8, _::binary>>), do: fail({:unexpected, <<c::utf8>>})

  defp object(<<?}, rest::binary>>, acc) when acc == %{}, do: {acc, rest}

  defp object(<<?", rest::binary>>, acc) do
    {key, rest} = string(rest, [])

    case skip_ws(rest) do
      <<?:, rest::binary>> ->
        {val, rest} = value(skip_ws(rest))
        acc = Map.put(acc, key, val)

        case skip_ws(rest) do
          <<?,, rest::binary>> -> object(skip_ws(rest), acc)
          <<?}, rest::binary>> -> {acc, rest}
          other -> unexpected(other)
        end

      other ->
        unexpected(other)
    end
  end

  defp object(other, _acc), do: unexpected(other)

  defp array(<<?], rest::binary>>, []), do: {[], rest}

  defp array(bin, acc) do
    {val, rest} = value(bin)
    acc = [val | acc]

    case skip_ws(rest) do
      <<?,, rest::binary>> -> array(skip_ws(rest), acc)
      <<?], rest::binary>> -> {Enum.reverse(acc), rest}
      other -> unexpected(other)
    end
  end

  defp unexpected(""), do: fail(:unexpected_end)
  defp unexpected(<<c::utf8, _::binary>>), do: fail({:unexpected, <<c::utf8>>})

  # Strings: copy runs of plain characters in one piece.
  defp string(bin, acc) do
    case plain_run(bin, 0) do
      {0, rest} ->
        string_special(rest, acc)

      {n, _} ->
        string_special(binary_part(bin, n, byte_size(bin) - n), [acc | binary_part(bin, 0, n)])
    end
  end

  defp plain_run(bin, n) do
    case bin do
      <<_::binary-size(n), c, _::binary>> when c != ?" and c != ?\\ and c >= 0x20 ->
        plain_run(bin, n + 1)

      _ ->
        {n, binary_part(bin, n, byte_size(bin) - n)}
    end
  end

  defp string_special(<<?", rest::binary>>, acc), do: {IO.iodata_to_binary(acc), rest}
  defp string_special(<<?\\, rest::binary>>, acc), do: escape(rest, acc)
  defp string_special("", _acc), do: fail(:unexpected_end)
  defp string_special(<<c, _::binary>>, _acc), do: fail({:control_character_in_string, c})

  @escapes %{
    ?" => ?",
    ?\\ => ?\\,
    ?/ => ?/,
    ?b => ?\b,
    ?f => ?\f,
    ?n => ?\n,
    ?r => ?\r,
    ?t => ?\t
  }

  defp escape(<<?u, rest::binary>>, acc) do
    {code, rest} = hex4(rest)

    cond do
      code in 0xD800..0xDBFF ->
        case rest do
          <<?\\, ?u, rest2::binary>> ->
            {low, rest2} = hex4(rest2)

            if low in 0xDC00..0xDFFF do
              char = 0x10000 + Bitwise.bsl(code - 0xD800, 10) + (low - 0xDC00)
              string(rest2, [acc | <<char::utf8>>])
            else
              fail(:lone_surrogate)
            end

          _ ->
            fail(:lone_surrogate)
        end

      code in 0xDC00..0xDFFF ->
        fail(:lone_surrogate)

      true ->
        string(rest, [acc | <<code::utf8>>])
    end
  end

  defp escape(<<c, rest::binary>>, acc) when is_map_key(@escapes, c),
    do: string(rest, [acc, Map.fetch!(@escapes, c)])

  defp escape("", _acc), do: fail(:unexpected_end)
  defp escape(<<c::utf8, _::binary>>, _acc), do: fail({:invalid_escape, <<c::utf8>>})

  defp hex4(<<a, b, c, d, rest::binary>>) do
    case Integer.parse(<<a, b, c, d>>, 16) do
      {code, ""} when a != ?- and a != ?+ -> {code, rest}
      _ -> fail(:invalid_unicode_escape)
    end
  end

  defp hex4(_), do: fail(:invalid_unicode_escape)

  # Numbers: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  defp number(bin) do
    {sign, rest} =
      case bin do
        <<?-, rest::binary>> -> {"-", rest}
        _ -> {"", bin}
      end

    {int, rest} =
      case rest do
        <<?0, rest::binary>> -> {"0", rest}
        <<c, _::binary>> when c in ?1..?9 -> digits(rest)
        other -> unexpected(other)
      end

    {frac, rest} =
      case rest do
        <<?., rest::binary>> -> required_digits(rest)
        _ -> {nil, rest}
      end

    {exp, rest} =
      case rest do
        <<e, ?-, rest::binary>> when e in [?e, ?E] -> exponent("-", rest)
        <<e, ?+, rest::binary>> when e in [?e, ?E] -> exponent("", rest)
        <<e, rest::binary>> when e in [?e, ?E] -> exponent("", rest)
        _ -> {nil, rest}
      end

    if frac == nil and exp == nil do
      {String.to_integer(sign <> int), rest}
    else
      text = sign <> int <> "." <> (frac || "0") <> "e" <> (exp || "0")

      try do
        {:erlang.binary_to_float(text), rest}
      rescue
        ArgumentError -> fail({:number_out_of_range, sign <> int})
      end
    end
  end

  defp exponent(sign, rest) do
    {digits, rest} = required_digits(rest)
    {sign <> digits, rest}
  end

  defp required_digits(<<c, _::binary>> = bin) when c in ?0..?9, do: digits(bin)
  defp required_digits(other), do: unexpected(other)

  defp digits(bin), do: digits(bin, 0)

  defp digits(bin, n) do
    case bin do
      <<_::binary-size(n), c, _::binary>> when c in ?0..?9 -> digits(bin, n + 1)
      _ -> {binary_part(bin, 0, n), binary_part(bin, n, byte_size(bin) - n)}
    end
  end

  # --- encoding -------------------------------------------------------------

  @doc false
  @spec encode(term()) :: {:ok, String.t()} | {:error, term()}
  def encode(term) do
    {:ok, IO.iodata_to_binary(enc(term))}
  catch
    {:json_error, reason} -> {:error, reason}
  end

  @doc false
  @spec encode!(term()) :: String.t()
  def encode!(term) do
    case encode(term) do
      {:ok, json} -> json
      {:error, reason} -> raise ArgumentError, "cannot encode as JSON: #{inspect(reason)}"
    end
  end

  defp enc(nil), do: "null"
  defp enc(true), do: "true"
  defp enc(false), do: "false"
  defp enc(atom) when is_atom(atom), do: enc_string(Atom.to_string(atom))
  defp enc(bin) when is_binary(bin), do: enc_string(bin)
  defp enc(int) when is_integer(int), do: Integer.to_string(int)
  # Shortest round-tripping form; "1.0e20" is valid JSON.
  defp enc(float) when is_float(float), do: Float.to_string(float)
  defp enc(list) when is_list(list), do: enc_list(list)
  defp enc(tuple) when is_tuple(tuple), do: enc_list(Tuple.to_list(tuple))
  defp enc(%MapSet{} = set), do: enc_list(MapSet.to_list(set))
  defp enc(%_{} = struct), do: fail({:unsupported_struct, struct.__struct__})

  defp enc(map) when is_map(map) do
    case Enum.map(map, fn {k, v} -> [enc_key(k), ?:, enc(v)] end) do
      [] -> "{}"
      pairs -> [?{, Enum.intersperse(pairs, ?,), ?}]
    end
  end

  defp enc(other), do: fail({:unsupported_term, other})

  defp enc_list([]), do: "[]"

  defp enc_list(list) do
    if not proper_list?(list), do: fail({:improper_list, list})
    [?[, Enum.intersperse(Enum.map(list, &enc/1), ?,), ?]]
  end

  defp proper_list?([]), do: true
  defp proper_list?([_ | tail]), do: proper_list?(tail)
  defp proper_list?(_), do: false

  defp enc_key(key) when is_binary(key), do: enc_string(key)

  defp enc_key(key) when is_atom(key) and key not in [nil, true, false],
    do: enc_string(Atom.to_string(key))

  defp enc_key(key) when is_integer(key), do: enc_string(Integer.to_string(key))
  defp enc_key(key), do: fail({:unsupported_key, key})

  defp enc_string(bin) do
    if not String.valid?(bin), do: fail({:invalid_utf8, bin})
    [?", escape_string(bin, bin, 0, 0), ?"]
  end

  # Walks the string, copying unescaped runs as sub-binaries.
  defp escape_string(<<c, rest::binary>>, orig, start, len)
       when c == ?" or c == ?\\ or c < 0x20 do
    [
      binary_part(orig, start, len),
      escape_char(c) | escape_string(rest, orig, start + len + 1, 0)
    ]
  end

  defp escape_string(<<_, rest::binary>>, orig, start, len),
    do: escape_string(rest, orig, start, len + 1)

  defp escape_string(<<>>, orig, start, len), do: [binary_part(orig, start, len)]

  defp escape_char(?"), do: "\\\""
  defp escape_char(?\\), do: "\\\\"
  defp escape_char(?\n), do: "\\n"
  defp escape_char(?\r), do: "\\r"
  defp escape_char(?\t), do: "\\t"
  defp escape_char(?\b), do: "\\b"
  defp escape_char(?\f), do: "\\f"

  defp escape_char(c),
    do: "\\u" <> String.pad_leading(Integer.to_string(c, 16), 4, "0")
end
