"""Builds dsa_fast and its extension dsa_fast._C (torch.utils.cpp_extension).

- C++ sources (csrc/*.cpp, csrc/cpu/*.cpp) always.
- CUDA sources (csrc/cuda/*.cu) when torch is a CUDA build and nvcc is found (CUDA_HOME), or
  when DSA_FAST_FORCE_CUDA=1 (then a missing toolkit is an error).
- DSA_FAST_NO_EXT=1: a pure-Python install (everything runs on the reference path).
- DSA_FAST_PTXAS_VERBOSE=1: nvcc -Xptxas -v (each kernel's registers and spills in the build log).
- TORCH_CUDA_ARCH_LIST: the GPU architectures to build for. Unset, torch takes those of the visible
  GPUs; with no GPU visible (a login node, a container build) this script sets the architectures the
  installed torch itself was built for, with PTX for the newest (default_cuda_arch_list).
Install with `pip install --no-build-isolation .` so the extension builds against YOUR torch.
"""
import glob
import os
import re
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name):
    return os.environ.get(name, "") == "1"


FALLBACK_CUDA_ARCH = "9.0"


def default_cuda_arch_list(torch_arch_list):
    """TORCH_CUDA_ARCH_LIST for a build that sees no GPU: the architectures of `torch_arch_list`
    (torch.cuda.get_arch_list() of the installed torch, e.g. ['sm_80', 'sm_86', 'sm_90']), as
    '8.0;8.6;9.0+PTX': machine code for each, PTX for the newest so that newer GPUs JIT-compile it.
    Suffixed targets (sm_90a) count as their base architecture; compute_* entries are PTX only and
    are skipped. An empty list gives FALLBACK_CUDA_ARCH."""
    archs = set()
    for name in torch_arch_list:
        m = re.fullmatch(r"sm_(\d+)(\d)[a-z]?", name)
        if m:
            archs.add((int(m.group(1)), int(m.group(2))))
    if not archs:
        return FALLBACK_CUDA_ARCH
    names = [f"{major}.{minor}" for major, minor in sorted(archs)]
    names[-1] += "+PTX"
    return ";".join(names)


def _extensions():
    if _flag("DSA_FAST_NO_EXT"):
        print("dsa_fast setup: DSA_FAST_NO_EXT=1 -> pure-Python install, no extension")
        return [], {}
    import torch
    from torch.utils import cpp_extension

    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
    force_cuda = _flag("DSA_FAST_FORCE_CUDA")
    with_cuda = force_cuda or (torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None)
    if force_cuda and (torch.version.cuda is None or cpp_extension.CUDA_HOME is None):
        sys.exit(
            f"dsa_fast setup: DSA_FAST_FORCE_CUDA=1 but torch {torch.__version__} has CUDA "
            f"{torch.version.cuda} and CUDA_HOME is {cpp_extension.CUDA_HOME}; install a CUDA torch "
            "and set CUDA_HOME (e.g. /usr/local/cuda)"
        )
    # -fno-trapping-math lets GCC if-convert float compares, so the CPU executor's tap loops
    # (csrc/cpu/resample_cpu.h, RowTaps) vectorise; it changes no value (only FP exception flags).
    # -fno-wrapv undoes the -fwrapv of Python's build flags (meant for CPython's own C): with it,
    # GCC 12 vectorises no loop whose index runs backwards or is offset (the flipped row copies).
    cxx = ["-O3", "-g0", "-fno-trapping-math", "-fno-wrapv"]
    link = []
    if "ATen parallel backend: OpenMP" in torch.__config__.parallel_info():
        # at::parallel_for (csrc/cpu: one image per task) runs on torch's OpenMP threads only when
        # the extension is itself compiled with OpenMP: without it _OPENMP is undefined and ATen's
        # header runs the whole batch on the calling thread. Linked against libgomp.so.1, the
        # runtime torch has already loaded (one OpenMP runtime, one thread pool).
        cxx += ["-fopenmp"]
        link += ["-fopenmp"]
    nvcc = ["-O3"]
    if _flag("DSA_FAST_PTXAS_VERBOSE"):
        nvcc += ["-Xptxas", "-v"]  # registers, spills and shared memory per kernel, in the build log
    include_dirs = []
    if with_cuda:
        # The toolkit may lack headers that torch's CUDA headers include (cuBLAS, ...); the pip
        # wheels of those libraries carry them.
        site = os.path.dirname(os.path.dirname(torch.__file__))
        include_dirs += sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            # NB: unset with no GPU, torch's own choice fails (it reads the visible GPUs' capability).
            archs = default_cuda_arch_list(torch.cuda.get_arch_list())
            print(f"dsa_fast setup: no GPU visible and TORCH_CUDA_ARCH_LIST unset: building for the "
                  f"architectures torch {torch.__version__} was built for: {archs}")
            os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    print(
        "dsa_fast setup: torch {} (CUDA {}), extension dsa_fast._C with {} C++ sources{}; "
        "CUDA_HOME={}, TORCH_CUDA_ARCH_LIST={}, MAX_JOBS={}".format(
            torch.__version__,
            torch.version.cuda,
            len(sources),
            f" + {len(cuda_sources)} CUDA sources" if with_cuda else ", no CUDA",
            cpp_extension.CUDA_HOME,
            os.environ.get("TORCH_CUDA_ARCH_LIST", "(from the visible GPUs)"),
            os.environ.get("MAX_JOBS", "(all cores)"),
        )
    )
    if with_cuda:
        ext = cpp_extension.CUDAExtension(
            "dsa_fast._C",
            sources + cuda_sources,
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=link,
        )
    else:
        ext = cpp_extension.CppExtension("dsa_fast._C", sources, extra_compile_args={"cxx": cxx},
                                         extra_link_args=link)
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


if __name__ == "__main__":  # as pip and `python setup.py` run it; tests import the functions above
    ext_modules, cmdclass = _extensions()
    setup(ext_modules=ext_modules, cmdclass=cmdclass)
