"""Stop strings: a row ends when its decoded new text contains one, and the text is cut before it."""

from __future__ import annotations

import pytest

from tubelet.generate import Sampling, TubeletLM, autoregressive_generate, speculative_generate
from tubelet.generate.stopping import StopStrings

from .test_speculative import PROMPTS, decoders

pytestmark = pytest.mark.usefixtures("one_thread")


def decode(tokens: list[int]) -> str:
    """Two characters per token, so a stop string can end inside a token or span two."""
    return "".join(chr(97 + t % 26) + chr(65 + t // 26) for t in tokens)


def test_cut_finds_the_shortest_prefix_and_cuts_the_text_before_the_stop():
    stop = StopStrings(decode, ["Bc", "zz"])
    tokens = [0, 27, 2, 3]  # "aA" "bB" "cA" "dA": "Bc" spans tokens 1 and 2
    assert stop.cut(tokens) == ([0, 27, 2], "aAb")
    assert stop.cut([0, 1]) == ([0, 1], "aAbA")  # no stop string
    assert StopStrings(decode, ["A"]).cut([0, 1]) == ([0], "a")  # ends inside the first token
    with pytest.raises(ValueError, match="empty"):
        StopStrings(decode, [""])


@pytest.mark.parametrize("speculative", [False, True])
def test_a_stop_string_ends_the_rows_that_produce_it(speculative):
    target, draft = decoders()
    free = autoregressive_generate(TubeletLM(target), PROMPTS, 16, sampling=Sampling(0)).tokens
    text = decode(free[2][4:6])  # a string row 2 produces at its 5th-6th tokens
    stop = StopStrings(decode, [text])
    if speculative:
        out = speculative_generate(TubeletLM(target), TubeletLM(draft), PROMPTS, 16, k=3,
                                   sampling=Sampling(0), stop=stop).tokens
    else:
        out = autoregressive_generate(TubeletLM(target), PROMPTS, 16, sampling=Sampling(0), stop=stop).tokens
    for b, row in enumerate(out):
        assert row == free[b][:len(row)]  # same tokens, maybe fewer
        if text in decode(free[b]):
            cut, _ = stop.cut(free[b])
            assert len(cut) <= len(row) < 16 or len(cut) == len(row) == 16
            assert stop.cut(row)[0] == cut
        else:
            assert row == free[b]
    assert len(out[2]) < 16


@pytest.mark.parametrize("speculative", [False, True])
def test_a_stream_writes_a_prefix_of_the_final_text_and_never_past_a_stop(speculative):
    from tubelet.generate.stopping import TextStream
    target, draft = decoders()
    free = autoregressive_generate(TubeletLM(target), PROMPTS[2:3], 16, sampling=Sampling(0)).tokens[0]
    stop = StopStrings(decode, [decode(free[6:8])[1:]])  # starts inside token 6, spans into 8
    pieces = []
    stream = TextStream(stop, pieces.append, 16)

    def on_step(rows):
        stream(rows)
        assert stop.cut(free)[1].startswith("".join(pieces))  # written: always final text

    if speculative:
        out = speculative_generate(TubeletLM(target), TubeletLM(draft), PROMPTS[2:3], 16, k=3,
                                   sampling=Sampling(0), stop=stop, on_step=on_step)
    else:
        out = autoregressive_generate(TubeletLM(target), PROMPTS[2:3], 16, sampling=Sampling(0), stop=stop,
                                      on_step=on_step)
    text = stop.cut(out.tokens[0])[1]
    assert len(pieces) > 1 and "".join(pieces) == text[:len("".join(pieces))]
    stream.finish(text)
    assert "".join(pieces) == text == decode(free)[:12 + 1]
