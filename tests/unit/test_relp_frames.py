"""RELP without I/O (domain/relp.py): the frame encoder and the incremental decoder (property tests: any bytes give
frames or a ProtocolError, never another exception or a wait on an invalid frame), responses, offers, the window."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from domain import relp
from domain.relp import Frame, FrameDecoder, ProtocolError, Response, Window, encode_frame

txnrs = st.integers(min_value=0, max_value=relp.MAX_NUMBER)
commands = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=32)
frames = st.builds(Frame, txnrs, commands, st.binary(max_size=300))


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(st.lists(frames, max_size=8), st.lists(st.integers(min_value=0), max_size=12))
def test_frames_round_trip_however_the_stream_is_cut(sent, cuts):
    stream = b"".join(encode_frame(f.txnr, f.command, f.data) for f in sent)
    decoder = FrameDecoder(max_data=300)
    got = [frame for chunk in chunked(stream, cuts) for frame in decoder.feed(chunk)]
    assert got == sent and decoder.pending == 0


@hsettings(max_examples=500)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0), max_size=6))
def test_any_bytes_give_frames_or_a_protocol_error(data, cuts):
    decoder = FrameDecoder(max_data=100)
    try:
        for chunk in chunked(data, cuts):
            for frame in decoder.feed(chunk):
                assert 0 <= frame.txnr <= relp.MAX_NUMBER and len(frame.data) <= 100
                assert encode_frame(frame.txnr, frame.command, frame.data) in data  # it was there, as framed
    except ProtocolError:
        return
    # not an error: what is held is the start of one frame, no longer than a header and its data
    assert decoder.pending <= 9 + 1 + 32 + 1 + 9 + 1 + 100 + 1


@given(st.binary(min_size=1, max_size=60).filter(lambda b: not b[:1].isdigit()), frames)
def test_garbage_is_refused_at_once_not_waited_on(garbage, frame):
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(garbage + encode_frame(frame.txnr, frame.command, frame.data))


@pytest.mark.parametrize("bad", [
    b"1 rsp 2 ok\r", b"1 rsp 0 \n", b"1 rsp 2ok\n", b"1234567890 rsp 0\n", b"1 " + b"a" * 33 + b" 0\n",
    b"1 rsp 1234567890 x", b"-1 rsp 0\n", b"1  rsp 0\n", b"1 r5p 0\n", b"1 rsp 6 200 OK!\n", b"\n",
])
def test_malformed_frames(bad):
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(bad)


def test_frames_before_a_fault_are_kept_on_the_error():
    with pytest.raises(ProtocolError) as fault:
        FrameDecoder().feed(b"1 rsp 6 200 OK\n2 rsp 6 200 OK\nHTTP/1.1 400\r\n")
    assert fault.value.frames == [Frame(1, "rsp", b"200 OK"), Frame(2, "rsp", b"200 OK")]


def test_an_oversized_frame_is_refused_before_its_data_arrives():
    with pytest.raises(ProtocolError, match="at most 10"):
        FrameDecoder(max_data=10).feed(b"1 rsp 11 ")


def test_encoder_refuses_what_relp_cannot_carry():
    assert encode_frame(1, "close") == b"1 close 0\n"
    assert encode_frame(7, "syslog", b"hi\nthere") == b"7 syslog 8 hi\nthere\n"
    for txnr, command in ((-1, "rsp"), (relp.MAX_NUMBER + 1, "rsp"), (1, ""), (1, "a" * 33), (1, "rs p"),
                          (1, "résumé")):
        with pytest.raises(ValueError):
            encode_frame(txnr, command)


@given(st.binary(max_size=200))
def test_responses_parse_strictly(data):
    try:
        response = relp.parse_response(data)
    except ProtocolError:
        return
    assert data[3:4] == b" " and response.code == int(data[:3]) and "\n" not in response.text
    assert data.startswith(b"%03d " % response.code + response.text.encode()) or b"\xef\xbf\xbd" in \
        response.text.encode()  # undecodable bytes in the text are replaced


def test_responses():
    assert relp.parse_response(b"200 OK") == Response(200, "OK")
    assert relp.parse_response(b"200 OK\nrelp_version=0").body == b"relp_version=0"
    assert not relp.parse_response(b"500 error 4 on connect").ok
    for bad in (b"", b"200", b"20 OK", b"200OK", b"OK 200", b"200 " + b"x" * 81):
        with pytest.raises(ProtocolError):
            relp.parse_response(bad)


offer_names = st.text(alphabet=st.characters(blacklist_characters="=\n,", blacklist_categories=("Cs",)),
                      min_size=1, max_size=32)
offer_values = st.text(alphabet=st.characters(blacklist_characters="\n,", blacklist_categories=("Cs",)),
                       min_size=1, max_size=40)


@given(st.dictionaries(offer_names, st.lists(offer_values, max_size=4), max_size=5))
def test_offers_round_trip(offers):
    assert relp.parse_offers(relp.encode_offers(offers)) == offers


def test_open_offers_and_the_servers_answer():
    assert relp.encode_offers(relp.open_offers("csm,1.2.0")) == \
        b"relp_version=0\nrelp_software=csm,1.2.0\ncommands=syslog"
    relp.check_open_response(Response(200, "OK", b"relp_version=0\nrelp_software=librelp,1.11.0\ncommands=syslog"))
    for response, reason in ((Response(500, "error 4 on connect"), "refused the session: 500"),
                             (Response(200, "OK", b"commands=syslog"), "no relp_version"),
                             (Response(200, "OK", b"relp_version=0\ncommands=eventlog"), "syslog command")):
        with pytest.raises(ProtocolError, match=reason):
            relp.check_open_response(response)


def rsp(txnr: int, text: bytes = b"200 OK") -> Frame:
    return Frame(txnr, "rsp", text)


def test_window_counts_in_order_answers_and_refuses_the_rest():
    window = Window(size=3)
    assert window.send("open", b"relp_version=0") == b"1 open 14 relp_version=0\n"
    window.receive(rsp(1, b"200 OK\nrelp_version=0\ncommands=syslog"))
    assert window.responses["open"].body.startswith(b"relp_version")
    for n in range(3):
        window.send("syslog", b"m%d" % n)
    assert window.full
    with pytest.raises(ProtocolError, match="full"):
        window.send("syslog", b"one too many")
    window.receive(rsp(2))
    window.receive(Frame(0, "somehint"))  # a hint other than serverclose: ignored
    assert (window.acknowledged, window.outstanding) == (1, 2)
    with pytest.raises(ProtocolError, match="TXNR 4, expected 3"):
        window.receive(rsp(4))


@pytest.mark.parametrize(("frame", "reason"), [
    (rsp(1, b"500 queue full"), "refused message 1: 500 queue full"),
    (Frame(0, "serverclose"), "serverclose"),
    (Frame(1, "syslog", b"x"), "sent a 'syslog' command"),
    (rsp(9), "TXNR 9, expected 1"),
    (rsp(1, b""), "not a RELP response"),
])
def test_window_ends_the_session_on(frame, reason):
    window = Window()
    window.send("syslog", b"x")
    with pytest.raises(ProtocolError, match=reason):
        window.receive(frame)
    assert window.acknowledged == 0


def test_close_is_answered_by_an_empty_rsp_and_txnr_wraps():
    window = Window()
    window.send("close")
    window.receive(rsp(1, b""))
    assert window.responses["close"].ok
    assert relp.next_txnr(relp.MAX_NUMBER) == 1 and relp.next_txnr(5) == 6
    with pytest.raises(ValueError):
        Window(size=0)
