"""Every output the command line writes is safe: a user's existing file is never lost or mixed.

Each class of hostile situation is built here: an output that names an input, a FIFO, a device or a
dangling link at ``-o``, a second writer racing for the same path, a full disk (ENOSPC mocked), a
name over the file system's limit, and a process killed at a controlled point (a patched hook in a
subprocess that announces where it stopped and waits, so no test depends on timing). Each checks
the exit code, one line on stderr, and that the directory holds exactly the user's files, unchanged.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from cli_helpers import FullDisk, run
from click.testing import Result
from onnx import TensorProto, helper, numpy_helper

import onnxdc

#: The directory holding the ``onnxdc`` package under test, for subprocesses to import the same one.
SOURCE_ROOT = str(Path(onnxdc.__file__).resolve().parent.parent)




def one_error_line(result: Result, code: int, *fragments: str) -> str:
    """The command failed with ``code``, printed nothing on stdout and one error line on stderr."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == "" and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxdc: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def snapshot(directory: Path) -> dict[str, bytes | str]:
    """Every entry of ``directory``: a file's bytes, a link's target, or the kind of anything else."""
    out: dict[str, bytes | str] = {}
    for p in directory.iterdir():
        if p.is_symlink():
            out[p.name] = "-> " + os.readlink(p)
        elif p.is_file():
            out[p.name] = p.read_bytes()
        else:
            out[p.name] = "special"
    return out


def tiny_model(seed: int) -> onnx.ModelProto:
    """y = x @ W with a 64x64 float weight (16 KB: it goes to the external data file)."""
    w = np.random.default_rng(seed).standard_normal((64, 64)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
                              [numpy_helper.from_array(w, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def weight(seed: int) -> np.ndarray:
    return numpy_helper.to_array(tiny_model(seed).graph.initializer[0])


def loaded_weight(path: Path) -> np.ndarray:
    """The weight the model at ``path`` gives onnx.load (which reads its external data)."""
    return numpy_helper.to_array(onnx.load(str(path)).graph.initializer[0])


@pytest.fixture
def containers(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Lossless containers of tiny_model(1), (2) and (3), outside the test's directory."""
    d = tmp_path_factory.mktemp("containers")
    out = {}
    for seed in (1, 2, 3):
        out[seed] = d / f"m{seed}.onnxdc"
        out[seed].write_bytes(onnxdc.compress(tiny_model(seed)).data)
    return out


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "m.onnx"
    onnx.save(tiny_model(1), str(path))
    return path


def decompress_external(container: Path, out: Path, *more: str) -> None:
    result = run("decompress", container, "-o", out, "--external-data", "-q", *more)
    assert result.exit_code == 0, result.output


def data_files(directory: Path, model: str = "out.onnx") -> list[str]:
    return sorted(p.name for p in directory.glob(f"{model}.*.data"))


# --------------------------------------------------------------------------- a process stopped at a point

#: Replaces ``onnxdc.<module>.<name>`` by a wrapper that calls it, announces "paused" on stdout and
#: waits for a line on stdin (or runs ``before`` first, then pauses, then calls it), then runs onnxdc.
_PAUSE_SCRIPT = """
import sys
import onnxdc.{module} as target
from onnxdc.console import run

real = target.{name}

def paused(*args, **kwargs):
    if {when_before}:
        print("paused", flush=True)
        sys.stdin.readline()
    result = real(*args, **kwargs)
    if not {when_before} and {condition}:
        print("paused", flush=True)
        sys.stdin.readline()
    return result

target.{name} = paused
run(sys.argv[1:])
"""


def start_paused(tmp_path: Path, *args: Any, module: str, name: str, before: bool = False,
                 condition: str = "True") -> subprocess.Popen[str]:
    """Start ``onnxdc ARGS`` in a subprocess and return once it stopped at the hook."""
    script = _PAUSE_SCRIPT.format(module=module, name=name, when_before=before, condition=condition)
    env = {**os.environ, "PYTHONPATH": SOURCE_ROOT}
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line != "paused\n":
        proc.kill()
        _, err = proc.communicate(timeout=60)
        pytest.fail(f"the subprocess did not reach the hook: {line!r} {err}")
    return proc


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["term", "int", "kill"])
def test_killed_between_data_and_model_keeps_old_model_with_old_data(tmp_path: Path, containers: dict[int, Path],
                                                                     sig: signal.Signals) -> None:
    """The issue's race: the new data file is written, the model not yet; the process dies. The
    model on disk must still load its own weights (the old ones), never the new data's."""
    out = tmp_path / "out.onnx"
    decompress_external(containers[1], out)
    before = snapshot(tmp_path)
    proc = start_paused(tmp_path, "decompress", containers[2], "-o", out, "--external-data", "--force", "-q",
                        module="onnx_io.write", name="commit", condition="str(args[1]).endswith('.data')")
    assert len(data_files(tmp_path)) == 2  # paused right after committing the new data file
    proc.send_signal(sig)
    code, stdout, stderr = finish(proc)
    np.testing.assert_array_equal(loaded_weight(out), weight(1))
    onnx.checker.check_model(str(out), full_check=True)
    if sig == signal.SIGKILL:  # no cleanup can run: at most the new, unreferenced data file is left
        assert code == -signal.SIGKILL
        after = snapshot(tmp_path)
        assert {k: v for k, v in after.items() if k in before} == before and len(after) == len(before) + 1
        return
    assert (code, stdout) == (128 + sig, "")
    assert stderr == ("onnxdc: terminated\n" if sig == signal.SIGTERM else "onnxdc: interrupted\n")
    assert snapshot(tmp_path) == before


def test_two_decompressions_to_one_output_never_mix(tmp_path: Path, containers: dict[int, Path]) -> None:
    """A second writer commits while the first is between its data and its model: the last model
    renamed into place wins, with its own data."""
    out = tmp_path / "out.onnx"
    decompress_external(containers[1], out)
    proc = start_paused(tmp_path, "decompress", containers[2], "-o", out, "--external-data", "--force", "-q",
                        module="onnx_io.write", name="write_atomic", before=True)
    decompress_external(containers[3], out, "--force")  # the other writer, start to end
    np.testing.assert_array_equal(loaded_weight(out), weight(3))
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    code, _, stderr = finish(proc)
    assert (code, stderr) == (0, "")
    np.testing.assert_array_equal(loaded_weight(out), weight(2))
    onnx.checker.check_model(str(out), full_check=True)
    assert not list(tmp_path.glob(".*"))  # no temporary file


def test_complete_overwrite_removes_the_old_data_and_is_deterministic(tmp_path: Path,
                                                                      containers: dict[int, Path]) -> None:
    out = tmp_path / "out.onnx"
    decompress_external(containers[1], out)
    first = snapshot(tmp_path)
    decompress_external(containers[1], out, "--force")  # the same container: the same bytes, one data file
    assert snapshot(tmp_path) == first and len(first) == 2
    decompress_external(containers[2], out, "--force")
    np.testing.assert_array_equal(loaded_weight(out), weight(2))
    assert len(data_files(tmp_path)) == 1 and data_files(tmp_path) != [k for k in first if k != "out.onnx"]
    assert sorted(snapshot(tmp_path)) == ["out.onnx", *data_files(tmp_path)]


def test_inline_overwrite_removes_the_old_models_data_file(tmp_path: Path, containers: dict[int, Path]) -> None:
    out = tmp_path / "out.onnx"
    decompress_external(containers[1], out)
    assert run("decompress", containers[2], "-o", out, "--force", "-q").exit_code == 0  # inline this time
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]
    np.testing.assert_array_equal(loaded_weight(out), weight(2))


def test_overwrite_leaves_data_files_that_are_not_ours(tmp_path: Path, containers: dict[int, Path]) -> None:
    """A model saved by onnx with its own data file name: --force replaces the model, and the data
    file it named (not written by onnxdc) stays."""
    out = tmp_path / "out.onnx"
    onnx.save_model(tiny_model(1), str(out), save_as_external_data=True, location="weights.bin", size_threshold=0)
    weights = (tmp_path / "weights.bin").read_bytes()
    decompress_external(containers[2], out, "--force")
    assert (tmp_path / "weights.bin").read_bytes() == weights
    np.testing.assert_array_equal(loaded_weight(out), weight(2))


def test_overwrite_leaves_an_onnx_saved_data_file_named_like_earlier_onnxdc_ones(
        tmp_path: Path, containers: dict[int, Path]) -> None:
    """``OUT.data`` is what onnx users call their data file, and another model may share it:
    --force replaces the model, never that file (earlier onnxdc versions used the same name)."""
    out = tmp_path / "out.onnx"
    onnx.save_model(tiny_model(1), str(out), save_as_external_data=True, location="out.onnx.data", size_threshold=0)
    other = tmp_path / "other.onnx"
    other.write_bytes(out.read_bytes())  # a second model naming the same data file
    weights = (tmp_path / "out.onnx.data").read_bytes()
    decompress_external(containers[2], out, "--force")
    assert (tmp_path / "out.onnx.data").read_bytes() == weights
    onnx.checker.check_model(str(other))
    np.testing.assert_array_equal(loaded_weight(out), weight(2))


def test_automatic_run_without_rules_removes_the_stale_recipe_with_force(tmp_path: Path, model_file: Path) -> None:
    """No tensor shared, no recipe: one left by an earlier run at OUT.recipe.toml would describe
    settings the new container does not use, so --force removes it with the rest of the output."""
    out = tmp_path / "out.onnxdc"
    recipe = tmp_path / "out.onnxdc.recipe.toml"
    recipe.write_text("# an earlier run's settings\n")
    result = run("compress", model_file, "-o", out, "--min-elements", "100000", "--force", "-q")
    assert result.exit_code == 0, result.output
    assert out.is_file() and not recipe.exists()


def test_sigterm_while_writing_removes_the_temporary_file(tmp_path: Path, model_file: Path) -> None:
    out = tmp_path / "out.onnxdc"
    out.write_bytes(b"precious")
    before = snapshot(tmp_path)
    proc = start_paused(tmp_path, "compress", model_file, "-o", out, "--lossless", "--force", "-q",
                        module="fileio.atomic", name="finish")
    assert len(list(tmp_path.glob(".out.onnxdc.*.tmp"))) == 1  # paused with the temporary file written
    proc.send_signal(signal.SIGTERM)
    assert finish(proc) == (143, "", "onnxdc: terminated\n")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("module", ["click", "numpy"])
def test_interrupt_during_imports_prints_one_line(tmp_path: Path, module: str) -> None:
    """SIGINT while the program is still importing (click at start-up, numpy in the command)."""
    script = textwrap.dedent(f"""
        import sys, time

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == {module!r}:
                    print("paused", flush=True)
                    time.sleep(60)
                return None

        sys.meta_path.insert(0, Block())
        from onnxdc.console import run
        run(sys.argv[1:])
    """)
    env = {**os.environ, "PYTHONPATH": SOURCE_ROOT}
    proc = subprocess.Popen([sys.executable, "-c", script, "inspect", str(tmp_path / "x.onnxdc")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline() == "paused\n"
    proc.send_signal(signal.SIGINT)
    assert finish(proc) == (130, "", "onnxdc: interrupted\n")


def test_python_dash_m_onnxdc(tmp_path: Path) -> None:
    missing = tmp_path / "x.onnxdc"
    proc = subprocess.run([sys.executable, "-m", "onnxdc", "inspect", str(missing)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": SOURCE_ROOT})
    assert (proc.returncode, proc.stderr) == (1, f"onnxdc: error: no such file: {str(missing)!r}\n")


# --------------------------------------------------------------------------- outputs that name an input


def test_output_naming_an_input_is_refused(tmp_path: Path) -> None:
    """-o the model's external data, the --calib file, the --recipe file, the recipe written beside
    the output, sensitivity's --csv, a hard link to the model: usage error, nothing touched."""
    model = tmp_path / "m.onnx"
    onnx.save_model(tiny_model(1), str(model), save_as_external_data=True, location="m.weights", size_threshold=0)
    calib = tmp_path / "c.npz"
    np.savez(calib, x=np.zeros((4, 1, 64), np.float32))
    recipe = tmp_path / "r.toml"
    recipe.write_text("[[rule]]\nmatch = 'W'\nbits = 4\n")
    beside = tmp_path / "o.onnxdc.recipe.toml"  # an npz named like the recipe automatic mode writes
    beside.write_bytes(calib.read_bytes())
    os.link(model, tmp_path / "hard.onnx")
    before = snapshot(tmp_path)
    cases = [
        ("compress", model, "-o", tmp_path / "m.weights", "--lossless", "--force"),
        ("compress", model, "-o", calib, "--bits", "4", "--calib", calib, "--force"),
        ("compress", model, "-o", recipe, "--recipe", recipe, "--force"),
        ("compress", model, "-o", tmp_path / "o.onnxdc", "--calib", beside, "--force"),
        ("compress", model, "-o", tmp_path / "hard.onnx", "--lossless", "--force"),
        ("sensitivity", model, "--calib", calib, "--csv", calib, "--force"),
        ("sensitivity", model, "--csv", tmp_path / "m.weights", "--force"),
    ]
    for args in cases:
        one_error_line(run(*args), 2, "is the input file")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- what sits at -o


def test_trailing_slash_is_refused(tmp_path: Path, model_file: Path) -> None:
    before = snapshot(tmp_path)
    one_error_line(run("compress", model_file, "-o", f"{tmp_path}/x.onnxdc/", "--lossless"), 2,
                   "ends with a path separator")
    assert snapshot(tmp_path) == before


def test_fifo_and_device_are_never_replaced(tmp_path: Path, model_file: Path) -> None:
    fifo = tmp_path / "fifo.onnxdc"
    os.mkfifo(fifo)
    one_error_line(run("compress", model_file, "-o", fifo, "--lossless", "--force"), 2, "is a FIFO",
                   "not a regular file")
    assert fifo.is_fifo()
    device = tmp_path / "null.onnxdc"
    try:
        os.mknod(device, 0o600 | 0o020000, os.makedev(1, 3))  # a character device, like /dev/null
    except (PermissionError, OSError):
        pytest.skip("cannot create a device node here")
    one_error_line(run("compress", model_file, "-o", device, "--lossless", "--force"), 2, "is a device")
    assert device.is_char_device()


@pytest.mark.parametrize("link_to", ["missing.onnxdc", "loop.onnxdc"], ids=["dangling", "looping"])
def test_a_broken_symlink_at_the_output_counts_as_existing(tmp_path: Path, model_file: Path, link_to: str) -> None:
    link = tmp_path / "loop.onnxdc"
    link.symlink_to(link_to)
    before = snapshot(tmp_path)
    one_error_line(run("compress", model_file, "-o", link, "--lossless"), 2, "exists", "--force")
    assert snapshot(tmp_path) == before
    assert run("compress", model_file, "-o", link, "--lossless", "--force", "-q").exit_code == 0
    assert not link.is_symlink() and link.read_bytes()[:8] == b"\x89ONNXDC\n"


def test_force_replaces_a_symlink_itself_never_its_target(tmp_path: Path, model_file: Path) -> None:
    target = tmp_path / "elsewhere.bin"
    target.write_bytes(b"precious")
    link = tmp_path / "out.onnxdc"
    link.symlink_to(target.name)
    assert run("compress", model_file, "-o", link, "--lossless", "--force", "-q").exit_code == 0
    assert target.read_bytes() == b"precious"
    assert not link.is_symlink() and link.read_bytes()[:8] == b"\x89ONNXDC\n"


# --------------------------------------------------------------------------- racing writers, exclusive commit


@pytest.mark.parametrize("hard_links", [True, False], ids=["link", "no-hard-links"])
def test_without_force_a_path_taken_meanwhile_is_not_overwritten(tmp_path: Path, model_file: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 hard_links: bool) -> None:
    """Another compression finishes first (between the existence check and the commit): this one
    fails with one line and leaves the other's file."""
    import onnxdc.pipeline.paths

    out = tmp_path / "out.onnxdc"
    real_encode = onnxdc.pipeline.paths.encode_model

    def other_writer_first(*args: Any, **kwargs: Any) -> Any:
        out.write_bytes(b"the other writer's")
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(onnxdc.pipeline.paths, "encode_model", other_writer_first)
    if not hard_links:
        def no_link(*_: Any, **__: Any) -> None:
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        monkeypatch.setattr(os, "link", no_link)
    one_error_line(run("compress", model_file, "-o", out, "--lossless"), 2, "exists", "--force")
    assert out.read_bytes() == b"the other writer's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "out.onnxdc"]
    out.unlink()
    monkeypatch.setattr(onnxdc.pipeline.paths, "encode_model", real_encode)
    assert run("compress", model_file, "-o", out, "--lossless", "-q").exit_code == 0  # a free path: written
    assert out.read_bytes() == onnxdc.compress(tiny_model(1)).data


# --------------------------------------------------------------------------- full disk, long names




def test_full_disk_while_writing_the_model_keeps_the_old_model_and_data(tmp_path: Path,
                                                                        containers: dict[int, Path],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.onnx"
    decompress_external(containers[1], out)
    before = snapshot(tmp_path)
    real_fdopen = os.fdopen
    opened: list[int] = []

    def second_write_fails(fd: int, *args: Any, **kwargs: Any) -> Any:
        opened.append(fd)
        fh = real_fdopen(fd, *args, **kwargs)
        return FullDisk(fh, keep=100) if len(opened) == 2 else fh  # the data file goes through, the model does not

    monkeypatch.setattr(os, "fdopen", second_write_fails)
    result = run("decompress", containers[2], "-o", out, "--external-data", "--force")
    monkeypatch.undo()
    one_error_line(result, 1, "cannot write", "out.onnx", os.strerror(errno.ENOSPC))
    assert len(opened) == 2
    assert snapshot(tmp_path) == before
    np.testing.assert_array_equal(loaded_weight(out), weight(1))


def test_full_disk_in_the_compress_spool(tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    out = tmp_path / "out.onnxdc"
    out.write_bytes(b"old")
    before = snapshot(tmp_path)
    monkeypatch.setattr("onnxdc.pipeline.paths.SPOOL_ABOVE", 0)
    real = tempfile.TemporaryFile
    monkeypatch.setattr(tempfile, "TemporaryFile", lambda *a, **k: FullDisk(real(*a, **k), keep=100))
    result = run("compress", model_file, "-o", out, "--lossless", "--force")
    monkeypatch.undo()
    one_error_line(result, 1, "cannot write", "out.onnxdc", os.strerror(errno.ENOSPC))
    assert snapshot(tmp_path) == before


def test_output_name_too_long(tmp_path: Path, model_file: Path, containers: dict[int, Path]) -> None:
    before = snapshot(tmp_path)
    one_error_line(run("compress", model_file, "-o", tmp_path / ("x" * 300 + ".onnxdc"), "--lossless"), 1,
                   "file name too long")
    # the model's name fits, its data file's (the name + ".<digest>.data") does not
    one_error_line(run("decompress", containers[1], "-o", tmp_path / ("y" * 240 + ".onnx"), "--external-data"), 1,
                   "file name too long")
    assert snapshot(tmp_path) == before


def test_missing_output_directory_and_unreadable_inputs_share_one_message_style(tmp_path: Path) -> None:
    from onnxdc.errors import ContainerError, ModelError
    from onnxdc.fileio.oserrors import read_error, write_error

    missing = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
    assert str(read_error(missing, "a.onnx", cls=ModelError)) == "no such file: 'a.onnx'"
    denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    assert str(read_error(denied, "c.onnxdc", cls=ContainerError)) == "cannot read 'c.onnxdc': Permission denied"
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(write_error(full, "o.onnxdc")) == "cannot write 'o.onnxdc': No space left on device"
    result = run("decompress", tmp_path / "none.onnxdc")
    assert result.stderr == f"onnxdc: error: no such file: {str(tmp_path / 'none.onnxdc')!r}\n"
