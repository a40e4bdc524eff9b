"""The short version of bench/fuzz.py: every decoder of hostile input gets ~2,000 generated
inputs (fixed seed) and may raise nothing but its own error type. Plus proof that the harness
does catch a crash, and the crashing inputs the long runs found, kept as regressions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pchat import config as config_mod
from p2pchat.paths import CONFIG_FILE
from tests import fuzzing

SEED = 15
INPUTS = 2_000


@pytest.fixture(autouse=True)
def _config_home(tmp_path: Path) -> Iterator[None]:
    fuzzing.set_config_home(tmp_path)
    yield
    fuzzing.set_config_home(None)


@pytest.mark.parametrize("name", sorted(fuzzing.targets()))
def test_decoder_survives_generated_inputs(name: str) -> None:
    result = fuzzing.run_target(fuzzing.targets()[name], INPUTS, SEED)
    assert result.inputs == INPUTS
    crashes = "\n".join(f"{data.hex()}\n{tb}" for data, tb in result.crashes)
    assert result.crash_count == 0, f"{name} crashed on:\n{crashes}"
    # The generator must reach past the outer checks: some inputs decode, most do not.
    assert result.accepted > 0 and result.rejected > 0


def test_every_named_decoder_is_fuzzed() -> None:
    assert set(fuzzing.targets()) == {
        "wire", "wire-stream", "call", "record", "bulk", "filename", "friend-code",
        "control", "web", "config",
    }  # fmt: skip


def test_the_harness_reports_a_crash_with_its_input() -> None:
    """A decoder that raises an undocumented error on some inputs is caught and the input kept
    (so the suite can fail)."""
    wire = fuzzing.targets()["wire"]

    def broken(data: bytes) -> bool:
        frame = wire.run(data)
        if len(data) > 40:
            raise KeyError("oops")  # not the decoder's FrameError
        return frame

    target = fuzzing.Target("broken", broken, wire.expected, wire.seeds, wire.structured)
    result = fuzzing.run_target(target, 500, SEED)
    assert result.crash_count > 0
    data, tb = result.crashes[0]
    assert len(data) > 40 and "KeyError" in tb


def test_a_recursion_error_is_a_crash_not_a_rejection() -> None:
    """Only the documented error types are rejections (the config crash was a RecursionError,
    a subclass of nothing the decoder documents)."""

    def nested(data: bytes) -> bool:
        return bool(json.loads(data))

    target = fuzzing.Target("json", nested, (ValueError,), list, lambda rng: b"")
    result = fuzzing.Result("json", 0)
    outcome = fuzzing.Outcome(target, result)
    assert outcome.feed(b"[1]") and outcome.feed(b"[")
    assert not outcome.feed(b"[" * 5000 + b"]" * 5000)
    assert (result.inputs, result.accepted, result.rejected, result.crash_count) == (3, 1, 1, 1)


# --- crashes the long runs found (each failed before its fix) -------------------------------


def _write(home: Path, text: str) -> None:
    (home / CONFIG_FILE).write_text(text)


def test_deeply_nested_config_is_a_config_error(tmp_path: Path) -> None:
    _write(tmp_path, "[" * 100_000 + "]" * 100_000)  # was a RecursionError
    with pytest.raises(config_mod.ConfigError, match="RecursionError"):
        config_mod.load_config(tmp_path)


def test_incoming_dir_naming_an_unknown_user_is_a_config_error(tmp_path: Path) -> None:
    _write(tmp_path, json.dumps({"incoming_dir": "~p2pchat-no-such-user/in"}))  # RuntimeError
    with pytest.raises(config_mod.ConfigError, match="incoming_dir"):
        config_mod.load_config(tmp_path)
