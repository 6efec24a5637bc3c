"""The installed package trains: the wheel, installed into a fresh environment with no
copy of the repository on its path, runs ``rnncells-train`` on a built-in config."""

import os
import pathlib
import re
import site
import subprocess
import sys
import zipfile

import tests

ROOT = tests.ROOT


def test_the_wheel_installs_and_trains_a_built_in_config(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("rnncells-*.whl")
    # Its long description is the README with no link relative to the repository, which
    # a package index page could not follow.
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(name).decode()
    assert "Description-Content-Type: text/markdown" in metadata
    assert "in the repository" in metadata and "rnncells" in metadata.split("\n\n", 1)[1]
    assert not re.findall(r"\]\((?!https?://|#)[^)\s]+\)", metadata)
    env_dir = tmp_path / "env"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=300)
    python = env_dir / "bin" / "python"
    # The dependencies (jax, optax, ...) come from this environment's site-packages, named
    # in a .pth file: its own .pth files, the editable install of the repository's
    # rnncells among them, are not read from there.
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    pathlib.Path(purelib, "dependencies.pth").write_text("\n".join(site.getsitepackages()))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import rnncells, importlib.util as u; print(rnncells.__file__); "
            "print(u.find_spec('experiments'), u.find_spec('configs'))",
        ],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert where[0].startswith(purelib), where  # the wheel's copy, not the repository's
    assert where[1] == "None None", where  # no experiments/ or configs/ to lean on
    overrides = ["--config.num_steps=20", "--config.log_every=10", "--config.eval_every=20"]
    overrides += ["--config.checkpoint_every=20", "--config.task.kwargs.T=5"]
    run = subprocess.run(
        [str(env_dir / "bin" / "rnncells-train"), "--config=adding:smoke", "--workdir=run"]
        + overrides,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "adding (T=5), lstm, init default: 20 of 20 steps, 2 seeds" in run.stdout
    assert (tmp_path / "run" / "summary.json").exists()
    assert (tmp_path / "run" / "checkpoints" / "20").is_dir()
    bad = subprocess.run(
        [str(python), "-m", "rnncells.training", "--config=addding", "--workdir=run2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and bad.stderr.splitlines() == [
        "error: --config must be a built-in config (adding, copy, digits, each also as "
        "NAME:smoke) or a config file's path, got 'addding'",
        "hint: did you mean --config=adding?",
    ], bad.stderr[-3000:]
