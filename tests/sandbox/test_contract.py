"""The automation contract (README: What automation code sees), run through a real LocalSandbox."""

from __future__ import annotations

import json

from itemflow.sandbox import Limits, LocalSandbox, SandboxResult

from .conftest import FAST, assert_no_strays

EVENT = {"type": "item.updated", "item": {"id": 7, "name": "new"}, "previous": {"id": 7, "name": "old"},
         "automation_id": 3, "run_id": 11}


async def test_print(sandbox: LocalSandbox) -> None:
    r = await sandbox.run('print("hi")', {}, FAST)
    assert (r.status, r.exit_code, r.stdout, r.stderr, r.error, r.result) == ("succeeded", 0, "hi\n", "", None, None)
    assert not r.stdout_truncated and not r.stderr_truncated
    assert r.duration_ms > 0


async def test_event_global_and_stdin(sandbox: LocalSandbox) -> None:
    code = "import json, sys\nresult = {'global': event, 'stdin': json.load(sys.stdin)}"
    r = await sandbox.run(code, EVENT, FAST)
    assert r.status == "succeeded", r
    assert r.result == {"global": EVENT, "stdin": EVENT}


async def test_large_event(sandbox: LocalSandbox) -> None:
    event = {"item": {"description": "x" * 500_000}}
    code = "import sys\nresult = [len(event['item']['description']), len(sys.stdin.read())]"
    r = await sandbox.run(code, event, FAST)
    assert r.status == "succeeded", r
    assert r.result == [500_000, len(json.dumps(event))]


async def test_result_captured(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("result = {'n': 1, 'xs': [1.5, None, 'é'], 'ok': True}", {}, FAST)
    assert r.status == "succeeded"
    assert r.result == {"n": 1, "xs": [1.5, None, "é"], "ok": True}


async def test_no_result_is_none(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("x = 1", {}, FAST)
    assert r.status == "succeeded" and r.result is None


async def test_result_from_function_scope_is_ignored(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("def f():\n    result = 5\nf()", {}, FAST)
    assert r.status == "succeeded" and r.result is None


async def test_non_json_result_is_an_error(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("result = {1, 2}", {}, FAST)
    assert r.status == "failed"
    assert r.exit_code == 0
    assert r.result is None
    assert "not JSON-serialisable" in r.error and "set" in r.error


async def test_nan_result_is_an_error(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("result = float('nan')", {}, FAST)
    assert r.status == "failed" and "not JSON-serialisable" in r.error


async def test_exception_fails_with_traceback(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("print('before')\ndef f():\n    raise ValueError('boom')\nf()", {}, FAST)
    assert r.status == "failed"
    assert r.exit_code == 1
    assert r.error == "exit code 1"
    assert r.stdout == "before\n"
    assert r.stderr.startswith("Traceback (most recent call last):\n")
    assert 'File "<automation>", line 4, in <module>' in r.stderr
    assert "ValueError: boom" in r.stderr
    assert "_zygote" not in r.stderr and "_child" not in r.stderr


async def test_syntax_error(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("def f(:\n  pass", {}, FAST)
    assert r.status == "failed" and r.exit_code == 1
    assert "SyntaxError" in r.stderr


async def test_exit_codes(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("import sys\nsys.exit(3)", {}, FAST)
    assert (r.status, r.exit_code, r.error) == ("failed", 3, "exit code 3")
    r = await sandbox.run("import sys\nresult = 'kept'\nsys.exit(0)", {}, FAST)
    assert (r.status, r.exit_code, r.result) == ("succeeded", 0, "kept")
    r = await sandbox.run("import sys\nsys.exit('bad input')", {}, FAST)
    assert (r.status, r.exit_code) == ("failed", 1)
    assert r.stderr == "bad input\n"
    r = await sandbox.run("import os\nos._exit(7)", {}, FAST)
    assert (r.status, r.exit_code) == ("failed", 7)


async def test_stdout_and_stderr_are_separate(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("import sys\nprint('out')\nprint('err', file=sys.stderr)", {}, FAST)
    assert (r.stdout, r.stderr) == ("out\n", "err\n")


async def test_unicode_output(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("print('héllo ✓ 🐍')", {}, FAST)
    assert r.stdout == "héllo ✓ 🐍\n"


async def test_truncation_with_success_follows_exit_code(sandbox: LocalSandbox) -> None:
    limits = Limits(timeout_seconds=2, output_bytes=1000)
    r = await sandbox.run("print('a' * 5000)", {}, limits)
    assert r.status == "succeeded" and r.exit_code == 0 and r.error is None
    assert r.stdout_truncated and not r.stderr_truncated
    assert r.stdout == "a" * 1000


async def test_truncation_with_failure_follows_exit_code(sandbox: LocalSandbox) -> None:
    limits = Limits(timeout_seconds=2, output_bytes=1000)
    r = await sandbox.run("import sys\nsys.stderr.write('e' * 5000)\nraise SystemExit(2)", {}, limits)
    assert r.status == "failed" and r.exit_code == 2
    assert r.stderr_truncated and not r.stdout_truncated
    assert r.stderr == "e" * 1000


async def test_truncation_never_splits_a_character(sandbox: LocalSandbox) -> None:
    limits = Limits(timeout_seconds=2, output_bytes=1001)
    r = await sandbox.run("print('é' * 1000)", {}, limits)  # 2 bytes each: the cap falls mid-character
    assert r.stdout_truncated and r.stdout == "é" * 500


async def test_timeout(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("import time\nprint('started', flush=True)\ntime.sleep(10)", {}, Limits(timeout_seconds=0.5))
    assert r.status == "timed_out"
    assert r.error == "timed out after 0.5s"
    assert r.exit_code is None
    assert r.stdout == "started\n"
    assert 400 < r.duration_ms < 3000
    assert_no_strays(sandbox)


async def test_threads_run_to_completion(sandbox: LocalSandbox) -> None:
    code = "import threading\nout = []\nt = threading.Thread(target=lambda: out.append(1))\nt.start()\nresult = 'ok'"
    r = await sandbox.run(code, {}, FAST)
    assert r.status == "succeeded" and r.result == "ok"


async def test_atexit_runs(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("import atexit\natexit.register(print, 'bye')", {}, FAST)
    assert r.stdout == "bye\n"


async def test_stdlib_is_available(sandbox: LocalSandbox) -> None:
    code = ("import datetime, decimal, hashlib, re, sqlite3, zoneinfo, collections, math\n"
            "db = sqlite3.connect(':memory:')\n"
            "result = [hashlib.sha256(b'x').hexdigest()[:8], str(decimal.Decimal('1.10') * 2),"
            " db.execute('select 1+1').fetchone()[0]]")
    r = await sandbox.run(code, {}, FAST)
    assert r.status == "succeeded", r.stderr
    assert r.result == ["2d711642", "2.20", 2]


async def test_runs_in_parallel_on_the_pool(sandbox: LocalSandbox) -> None:
    import asyncio

    results = await asyncio.gather(*(sandbox.run(f"result = {i} * 2", {}, FAST) for i in range(20)))
    assert [r.result for r in results] == [i * 2 for i in range(20)]
    assert all(isinstance(r, SandboxResult) and r.status == "succeeded" for r in results)


async def test_result_round_trips_as_dict(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("result = [1]", {}, FAST)
    assert SandboxResult.from_dict(json.loads(json.dumps(r.to_dict()))).to_dict() == r.to_dict()


async def test_check_is_healthy(sandbox: LocalSandbox) -> None:
    assert await sandbox.check() is None


async def test_large_code(sandbox: LocalSandbox) -> None:
    code = "\n".join(f"v{i} = {i}" for i in range(30_000)) + "\nresult = v29999"
    assert len(code) > 300_000
    r = await sandbox.run(code, {}, Limits(timeout_seconds=5))
    assert r.status == "succeeded" and r.result == 29999
