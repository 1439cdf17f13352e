"""The strict-skip check CI runs with (tests/conftest.py, tests/allowed_skips.txt): a skip
its job does not list fails the session; a listed one does not."""

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import ALLOWED_SKIPS_FILE, load_allowed_skips

HERE = os.path.dirname(os.path.abspath(__file__))

TESTS = '''
import pytest

def test_runs():
    pass

def test_allowed():
    pytest.skip("an expected reason")

@pytest.mark.skipif(True, reason="a marker's reason")
def test_marked():
    pass

def test_surprise():
    pytest.skip("a new skip")
'''


def _run(tmp_path, allowed, extra_module=""):
    (tmp_path / "test_sample.py").write_text(TESTS)
    if extra_module:
        (tmp_path / "test_whole.py").write_text(extra_module)
    (tmp_path / "allowed.txt").write_text(textwrap.dedent(allowed))
    env = dict(os.environ, FASTADAM_ALLOWED_SKIPS=str(tmp_path / "allowed.txt"),
               PYTHONPATH=os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p))
    # tests/conftest.py as a plugin of a session over tmp_path's tests only.
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p",
                           "no:cacheprovider", "--strict-skips=job", "-q", "--rootdir",
                           str(tmp_path), str(tmp_path)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)


def test_an_unlisted_skip_fails_the_session(tmp_path):
    proc = _run(tmp_path, """
        [job]
        # comment
        test_sample.py::test_allowed | expected reason | why
        test_sample.py::test_mark* | marker's | why
        [other]
        test_sample.py::test_surprise | new skip | allowed in another job only
        """, extra_module="import pytest\npytest.importorskip('no_such_module_here')\n")
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "4 skipped, 2 not allowed" in out, out
    assert "NOT ALLOWED test_sample.py::test_surprise: a new skip" in out, out
    assert "NOT ALLOWED test_whole.py: could not import 'no_such_module_here'" in out, out
    assert "allowed     test_sample.py::test_allowed: an expected reason" in out, out
    assert "allowed     test_sample.py::test_marked: a marker's reason" in out, out


def test_listed_skips_pass_and_the_reason_must_match(tmp_path):
    proc = _run(tmp_path, """
        [job]
        test_sample.py::test_* | reason | why
        test_sample.py::test_surprise | new skip | why
        """)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 skipped, 0 not allowed" in proc.stdout
    proc = _run(tmp_path, """
        [job]
        test_sample.py::* | another reason | the reason does not match
        """)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "3 skipped, 3 not allowed" in proc.stdout


def test_a_failing_session_stays_failed(tmp_path):
    (tmp_path / "test_fails.py").write_text("def test_fails():\n    assert False\n")
    proc = _run(tmp_path, """
        [job]
        test_sample.py::* | reason | why
        test_sample.py::* | skip | why
        """)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed" in proc.stdout and "3 skipped, 0 not allowed" in proc.stdout


def test_malformed_lists_are_usage_errors(tmp_path):
    proc = _run(tmp_path, "[another]\n")
    assert proc.returncode == 4
    assert "has no [job] section" in proc.stderr
    # An empty REASON is refused too: every entry says what it allows, and why.
    proc = _run(tmp_path, """
        [job]
        test_sample.py::* | | no reason needed
        """)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "expected 'PATTERN | REASON | WHY'" in proc.stderr


@pytest.mark.parametrize("job", ["ci", "ci-no-qemu", "sanitize", "cibuildwheel"])
def test_every_ci_job_has_a_section(job):
    for pattern, reason, why in load_allowed_skips(ALLOWED_SKIPS_FILE, job):
        assert pattern.startswith("tests/") and reason and why


def test_patterns_take_brackets_literally():
    # A parametrised test's id carries its parameters in brackets: "[*]" in an entry must
    # match "[SGD]", as the lists write it (fnmatch would read "[*]" as the character "*").
    from conftest import pattern_matches
    assert pattern_matches("tests/t.py::test_x[*]", "tests/t.py::test_x[SGD]")
    assert pattern_matches("tests/*", "tests/t.py::test_x[a-b]")
    assert pattern_matches("tests/t.py::test_x[a]", "tests/t.py::test_x[a]")
    assert not pattern_matches("tests/t.py::test_x[*]", "tests/t.py::test_x")
    assert not pattern_matches("tests/t.py::test_x[*]", "tests/t.py::test_xy[a]")
    assert not pattern_matches("tests/t.py::test_?", "tests/t.py::test_a")
