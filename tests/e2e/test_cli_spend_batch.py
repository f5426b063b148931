"""`wallet spend-batch FILE`: usage logs (JSON lines, one spend a line) replayed into the wallet in batches,
each spend once however often the file is run; failed lines named by number; a summary; exit 1 if any
line was not spent."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

from tests.e2e.test_cli import clean_env, ok, wallet


def line(user: str, credits: str, key: str, **extra: object) -> str:
    return json.dumps({"user_id": user, "credits": credits, "reason": "usage", "idempotency_key": key, **extra})


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def balance(cwd: Path, user: str) -> str:
    shown: str = json.loads(ok(wallet(cwd, "balance", user)))["balance"]
    return shown


def test_a_file_is_spent_line_by_line_and_a_second_run_spends_nothing_twice(tmp_path: Path) -> None:
    ok(wallet(tmp_path, "grant", "ivy", "10.00", "--reason", "funds"))
    usage = write(tmp_path / "usage.jsonl",
                  *(line("ivy", "1.50", f"use-{n}", metadata={"n": str(n)}) for n in range(5)))

    first = wallet(tmp_path, "spend-batch", str(usage), "--batch-size", "2")  # three batches
    assert first.returncode == 0, first.stderr
    assert first.stdout == "spent 5, replayed 0, insufficient_credits 0, conflict 0, invalid 0 (5 lines)\n"
    assert first.stderr == ""  # no progress bar when stderr is not a terminal, nothing failed
    assert balance(tmp_path, "ivy") == "2.50"

    again = wallet(tmp_path, "spend-batch", str(usage))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("spent 0, replayed 5,")
    assert balance(tmp_path, "ivy") == "2.50"
    assert ok(wallet(tmp_path, "verify"))


def test_failed_lines_are_named_by_number_and_the_exit_status_is_1(tmp_path: Path) -> None:
    ok(wallet(tmp_path, "grant", "ivy", "3.00", "--reason", "funds"))
    usage = write(
        tmp_path / "usage.jsonl",
        line("ivy", "1.00", "a"),
        '{"user_id": "ivy", "credits": "1.00",',  # 2: cut off
        "",  # 3: blank lines are skipped
        line("ivy", "1.00", "a"),  # 4: the same spend again
        line("ivy", "2.00", "a"),  # 5: the same key for another spend
        line("ivy", "5.00", "b"),  # 6: more than is left
        line("ivy", "1.001", "c"),  # 7
        '["not", "an", "object"]',  # 8
        line("ivy", "2.00", "d"),  # 9
    )

    result = wallet(tmp_path, "spend-batch", str(usage))

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stdout == "spent 2, replayed 1, insufficient_credits 1, conflict 1, invalid 3 (8 lines)\n"
    failed = result.stderr.splitlines()
    assert [text.split(":")[0].split(" (")[0] for text in failed] == [
        "line 2", "line 8", "line 5", "line 6", "line 7"
    ]
    assert "line 2: invalid: item: not JSON" in result.stderr
    assert "line 5 (idempotency_key a): conflict:" in result.stderr
    assert "line 6 (idempotency_key b): insufficient_credits:" in result.stderr
    assert "line 7 (idempotency_key c): invalid: credits: " in result.stderr
    assert balance(tmp_path, "ivy") == "0.00"


def test_standard_input_and_an_unreadable_file(tmp_path: Path) -> None:
    ok(wallet(tmp_path, "grant", "ivy", "1.00", "--reason", "funds"))
    piped = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "spend-batch", "-"], cwd=tmp_path, env=clean_env(),
        input=line("ivy", "0.25", "p-1") + "\n", capture_output=True, text=True, timeout=120,
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith("spent 1,")
    missing = wallet(tmp_path, "spend-batch", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "cannot read" in missing.stderr
    assert wallet(tmp_path, "spend-batch", "x", "--batch-size", "1001").returncode == 2


def test_a_progress_bar_is_drawn_on_a_terminal(tmp_path: Path) -> None:
    ok(wallet(tmp_path, "grant", "ivy", "10.00", "--reason", "funds"))
    usage = write(tmp_path / "usage.jsonl", *(line("ivy", "0.01", f"t-{n}") for n in range(50)))
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # a terminal 80 columns wide
    try:
        result = subprocess.run(
            [sys.executable, "-m", "entrypoints.cli", "spend-batch", str(usage)], cwd=tmp_path, env=clean_env(),
            stdout=subprocess.PIPE, stderr=follower, text=True, timeout=120,
        )
        os.close(follower)
        follower = -1
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: everything was read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
    assert result.returncode == 0
    assert result.stdout.startswith("spent 50,")
    assert b"0/50 [" in drawn, drawn  # drawn at the start, then updated as batches commit
    assert b"spent" not in drawn  # the summary goes to stdout
