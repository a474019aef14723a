"""Every csrc/cuda/*.cu compiles with `nvcc -c` against the installed torch's headers, so CUDA code cannot rot on
CPU-only machines. Skipped when nvcc is not on the PATH. The CPU torch wheel lacks the generated
c10/cuda/impl/cuda_cmake_macros.h, so a stub goes on the include path."""
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CU_FILES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))
NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc not on the PATH")
@pytest.mark.parametrize("source", CU_FILES, ids=[p.name for p in CU_FILES])
def test_cu_file_compiles(source, tmp_path):
    from torch.utils.cpp_extension import include_paths

    stub = tmp_path / "stub" / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_MAIN_LIB\n")
    includes = [str(tmp_path / "stub"), *include_paths(), sysconfig.get_paths()["include"]]
    command = [NVCC, "-c", "-std=c++20", "-O0", "-DIMAGING_WITH_CUDA", "-arch=sm_90",
               *(f"-I{p}" for p in includes), str(source), "-o", str(tmp_path / (source.stem + ".o"))]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, f"nvcc failed on {source.name}:\n{done.stderr[-4000:]}"
    assert (tmp_path / (source.stem + ".o")).stat().st_size > 0


def test_every_cu_file_is_checked():
    assert CU_FILES, "no csrc/cuda/*.cu found"
