"""The reference tests may skip on a laptop without `../shared/reference/`, never in CI: there a
skipped reference test fails the run (tests/conftest.py, `.ci/run`).

Each case runs pytest in a subprocess on a two-test file next to a copy of this suite's conftest,
with the reference folder pointed somewhere (SENFORMER_REFERENCE_DIR)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

TESTS = '''
import pytest

def test_reads_reference(reference_dir):
    assert reference_dir.is_dir()

def test_skips_inside(reference_dir):
    if not (reference_dir / "no_such_file.npz").is_file():
        pytest.skip("one reference file is absent")

def test_unrelated_skip():
    pytest.skip("not a reference test")
'''


def guarded_suite(tmp_path: Path) -> Path:
    """The three tests above beside a copy of this suite's conftest."""
    suite = tmp_path / "suite"
    suite.mkdir(exist_ok=True)
    shutil.copy(Path(__file__).with_name("conftest.py"), suite / "conftest.py")
    (suite / "test_guarded.py").write_text(TESTS)
    return suite


def clean_environment() -> dict[str, str]:
    """This process's environment without the variables that switch the guard on."""
    return {k: v for k, v in os.environ.items()
            if k not in ("CI", "SENFORMER_REQUIRE_REFERENCE", "PYTEST_ADDOPTS")}


def run_pytest(tmp_path: Path, reference: Path, **env: str) -> tuple[int, dict[str, str], str]:
    """(exit code, {test name: passed | failed | skipped} from pytest's JUnit XML, output)."""
    suite = guarded_suite(tmp_path)
    report = tmp_path / "report.xml"
    environment = clean_environment()
    environment.update(SENFORMER_REFERENCE_DIR=str(reference), **env)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             f"--junitxml={report}", str(suite)], cwd=suite, env=environment,
                            capture_output=True, text=True, timeout=120)
    found = {}
    for case in ElementTree.parse(report).iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        found[case.get("name")] = {"failure": "failed", "error": "failed",
                                   "skipped": "skipped"}[kinds[0]] if kinds else "passed"
    return result.returncode, found, result.stdout + result.stderr


def test_reference_tests_skip_outside_ci(tmp_path: Path) -> None:
    code, found, output = run_pytest(tmp_path, tmp_path / "absent")
    assert code == 0, output
    assert found == {"test_reads_reference": "skipped", "test_skips_inside": "skipped",
                     "test_unrelated_skip": "skipped"}


@pytest.mark.parametrize("env", [{"CI": "true"}, {"SENFORMER_REQUIRE_REFERENCE": "1"}],
                         ids=["CI=true", "SENFORMER_REQUIRE_REFERENCE=1"])
def test_a_skipped_reference_test_fails_in_ci(tmp_path: Path, env: dict) -> None:
    code, found, output = run_pytest(tmp_path, tmp_path / "absent", **env)
    assert code == 1, output
    assert found == {"test_reads_reference": "failed", "test_skips_inside": "failed",
                     "test_unrelated_skip": "skipped"}
    assert "reference data not found" in output


def test_with_the_reference_present_ci_passes(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "no_such_file.npz").write_bytes(b"")
    code, found, output = run_pytest(tmp_path, reference, CI="true")
    assert code == 0, output
    assert found == {"test_reads_reference": "passed", "test_skips_inside": "passed",
                     "test_unrelated_skip": "skipped"}
    # One reference file missing inside it fails in CI and skips elsewhere.
    (reference / "no_such_file.npz").unlink()
    assert run_pytest(tmp_path, reference, CI="true")[1]["test_skips_inside"] == "failed"
    assert run_pytest(tmp_path, reference, CI="0")[1]["test_skips_inside"] == "skipped"


@pytest.mark.parametrize("present", [False, True], ids=["reference-absent", "reference-present"])
def test_ci_entry_point_fails_when_a_reference_test_skips(tmp_path: Path, present: bool) -> None:
    """`.ci/run` itself: a `make` on PATH that records its arguments and directory and runs the
    guarded suite with the environment `.ci/run` gives it. With the reference absent `.ci/run` must
    exit non-zero (its reference tests fail instead of skipping); with it present, 0. The -rs it
    adds lists the unrelated skip."""
    repository = Path(__file__).resolve().parents[1]
    suite = guarded_suite(tmp_path)
    reference = tmp_path / "reference"
    if present:
        reference.mkdir()
        (reference / "no_such_file.npz").write_bytes(b"")
    calls = tmp_path / "make-calls.txt"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    make = bin_dir / "make"
    make.write_text("#!/bin/sh\n"
                    f'echo "$* in $PWD" >> "{calls}"\n'
                    f'exec "{sys.executable}" -m pytest -q -p no:cacheprovider "{suite}"\n')
    make.chmod(0o755)
    environment = clean_environment()
    environment.update(PATH=f"{bin_dir}{os.pathsep}{environment.get('PATH', '')}",
                       SENFORMER_REFERENCE_DIR=str(reference))
    result = subprocess.run(["bash", str(repository / ".ci" / "run")], env=environment,
                            capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    (call,) = calls.read_text().splitlines()  # one `make test`, run at the repository's root
    arguments, _, directory = call.partition(" in ")
    assert arguments == "test" and Path(directory).resolve() == repository
    assert "SKIPPED" in output and "not a reference test" in output  # -rs reached pytest
    if present:
        assert result.returncode == 0, output
    else:
        assert result.returncode != 0, output
        assert "reference data not found" in output and "CI requires it" in output
