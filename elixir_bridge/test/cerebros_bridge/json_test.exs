defmodule CerebrosBridge.JSONTest do
  use ExUnit.Case, async: true

  alias CerebrosBridge.JSON

  # Every decoding case runs through the bridge's own decoder and through
  # JSON.decode/1 (Elixir's JSON on 1.18+, the same decoder before).
  @decoders [own: &JSON.decode_own/1, default: &JSON.decode/1]

  @valid [
    {~s({"a": [1, 2.5, true, false, null], "b": {"c": "d"}}),
     %{"a" => [1, 2.5, true, false, nil], "b" => %{"c" => "d"}}},
    {~s( \t\n\r[ ] ), []},
    {~s({}), %{}},
    {~s([[[[[]]]]]), [[[[[]]]]]},
    {~s("caf\u00e9 ☕ 日本"), "café ☕ 日本"},
    {~s("\\"\\\\\\/\\b\\f\\n\\r\\t"), "\"\\/\b\f\n\r\t"},
    {~s("\\u00e9\\u263A"), "é☺"},
    {~s("\\ud83d\\ude00 smile"), "😀 smile"},
    {~s("\\uD834\\uDD1E"), "𝄞"},
    {~s("\\u0000"), <<0>>},
    {~s(123456789012345678901234567890), 123_456_789_012_345_678_901_234_567_890},
    {~s(-98765432109876543210), -98_765_432_109_876_543_210},
    {~s(0), 0},
    {~s(-0), 0},
    {~s(1e3), 1000.0},
    {~s(1E+3), 1000.0},
    {~s(-2.5e-3), -0.0025},
    {~s(6.02214076e23), 6.02214076e23},
    {~s(0.1), 0.1},
    {~s({"a": 1, "a": 2}), %{"a" => 2}},
    {~s({"nested": {"list": [{"x": [1, {"y": null}]}]}}),
     %{"nested" => %{"list" => [%{"x" => [1, %{"y" => nil}]}]}}}
  ]

  @invalid [
    "",
    "   ",
    "{",
    "[1, 2",
    "[1,]",
    ~s({"a" 1}),
    ~s({"a": 1,}),
    ~s({a: 1}),
    "'single'",
    ~s("unterminated),
    ~s("bad \\x escape"),
    ~s("\\u12"),
    ~s("\\uZZZZ"),
    ~s("\\ud83d alone"),
    ~s("\\ude00"),
    "\"raw\ncontrol\"",
    "01",
    "1.",
    ".5",
    "1e",
    "+1",
    "-",
    "NaN",
    "Infinity",
    "tru",
    "nul",
    "[1] 2",
    "1e400",
    <<?", 0xFF, ?">>
  ]

  for {name, decoder} <- @decoders do
    test "#{name}: decodes valid documents" do
      for {json, expected} <- @valid do
        assert unquote(decoder).(json) == {:ok, expected}, "decoding #{inspect(json)}"
      end
    end

    test "#{name}: rejects invalid documents with an error" do
      for json <- @invalid do
        assert {:error, _} = unquote(decoder).(json), "decoding #{inspect(json)} should fail"
      end
    end
  end

  test "encodes and round-trips terms" do
    term = %{
      "text" => "café ☕ \"q\" \\ / \n\t\r\b\f \u0001 😀",
      "big" => 123_456_789_012_345_678_901_234_567_890,
      "floats" => [0.1, -2.5e-3, 1.0e20, 6.02214076e23, 0.0],
      "nested" => [%{"a" => [nil, true, false]}, []],
      "empty" => %{}
    }

    assert {:ok, json} = JSON.encode(term)
    assert JSON.decode_own(json) == {:ok, term}
    assert JSON.decode(json) == {:ok, term}
  end

  test "escapes control characters and keeps non-ASCII text as UTF-8" do
    assert JSON.encode!("a\u0001b\u001f\"") == ~s("a\\u0001b\\u001F\\"")
    assert JSON.encode!("é😀") == ~s("é😀")
  end

  test "encodes atoms, atom keys, tuples and sets as JSON values" do
    assert JSON.encode!(%{dataset_id: :digits}) == ~s({"dataset_id":"digits"})
    assert JSON.encode!({8, 8}) == "[8,8]"
    assert JSON.encode!(MapSet.new([1])) == "[1]"
    assert JSON.encode!(%{1 => nil}) == ~s({"1":null})
  end

  test "refuses terms JSON cannot carry" do
    assert {:error, {:invalid_utf8, _}} = JSON.encode(<<0xFF>>)
    assert {:error, {:unsupported_term, _}} = JSON.encode(self())
    assert {:error, {:unsupported_key, _}} = JSON.encode(%{{1, 2} => 1})
    assert {:error, {:improper_list, _}} = JSON.encode([1 | 2])
    assert {:error, {:unsupported_struct, URI}} = JSON.encode(URI.parse("http://x"))
    assert_raise ArgumentError, fn -> JSON.encode!(make_ref()) end
  end
end
