"""`mixed_precision="auto"`, the pretraining default: mixed bfloat16 exactly where the CPU
computes bfloat16 natively (AVX512_BF16 or AMX) and oneDNN is not capped below that; float32
on AVX2-only CPUs, where bfloat16 is emulated and about 4x slower."""

import pytest

from keras_infobal.pretraining import bfloat16_is_fast, resolve

AVX2_HOST = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
BF16_HOST = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16\n"
AMX_HOST = "processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_tile amx_bf16\n"


@pytest.fixture
def cpu(tmp_path):
    def write(text):
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        return str(path)
    return write


@pytest.mark.parametrize("text, cap, fast", [
    (BF16_HOST, None, True),
    (AMX_HOST, None, True),
    (AVX2_HOST, None, False),
    (BF16_HOST, "AVX2", False),  # oneDNN capped to AVX2: bfloat16 would be emulated
    (BF16_HOST, "avx512_core", False),
    (BF16_HOST, "AVX512_CORE_BF16", True),
    (BF16_HOST, "AVX512_CORE_AMX", True),
    (BF16_HOST, "ALL", True),
    (AVX2_HOST, "ALL", False),
])
def test_bfloat16_is_fast_reads_the_flags_and_the_onednn_cap(cpu, text, cap, fast):
    environ = {} if cap is None else {"ONEDNN_MAX_CPU_ISA": cap}
    assert bfloat16_is_fast(cpu(text), environ) is fast


def test_without_cpuinfo_it_trains_in_float32(tmp_path):
    assert bfloat16_is_fast(str(tmp_path / "missing"), {}) is False


def test_auto_is_the_default_and_resolves_to_what_the_run_trains_under():
    assert resolve(recipe="dim")["mixed_precision"] is bfloat16_is_fast()
    assert resolve(recipe="dim", mixed_precision=True)["mixed_precision"] is True
    assert resolve(recipe="dim", mixed_precision=False)["mixed_precision"] is False
    with pytest.raises(ValueError, match=r"'mixed_float16'.*'auto'.*got 'yes'"):
        resolve(recipe="dim", mixed_precision="yes")
