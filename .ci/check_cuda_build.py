"""Checks a CUDA build of deepfast installed in the current venv (run by .ci/cuda_check.sh).

Run from a directory outside the repo, so that `import deepfast` finds the installed package.
No GPU is needed: this checks what was built and registered, not what a CUDA call computes.
Environment: DEEPFAST_REPO (the checkout, which the package must not be imported from),
TORCH_CUDA_ARCH_LIST and CUDA_HOME (to check the architectures in the fatbinary).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sass import local_traffic  # noqa: E402

failures: list[str] = []
summary: list[str] = []


def check(ok: bool, what: str, why: str = "") -> bool:
    (summary if ok else failures).append(what if ok else f"{what}: {why}")
    print(f"  [{'ok' if ok else 'FAIL'}] {what}" + ("" if ok or not why else f": {why}"), flush=True)
    return ok


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def main() -> int:
    import torch

    site = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    repo = os.environ.get("DEEPFAST_REPO")
    print(
        f"python {sys.executable}\ntorch {torch.__version__} (CUDA {torch.version.cuda}), GPU visible: {torch.cuda.is_available()}"
    )

    # 1. the installed package, not the checkout
    import deepfast

    pkg = Path(deepfast.__file__).parent
    where = f"deepfast {deepfast.__version__} from {pkg}"
    check(any(inside(pkg, s) for s in site), where, "not in this venv's site-packages")
    if repo:
        check(not inside(pkg, repo), "deepfast is not imported from the checkout", f"{pkg} is inside {repo}")

    # 2. the compiled extension, with its CUDA kernels
    ext = deepfast.backends.extension
    if not check(ext is not None, "deepfast._C loads", deepfast.backends._extension_error):
        return 1
    check(inside(ext.__file__, pkg), f"deepfast._C is {ext.__file__}", "not inside the installed package")
    check("cuda" in ext.backends, f"deepfast._C.backends = {tuple(ext.backends)} includes 'cuda'", "built without CUDA")
    check(bool(ext.cuda_archs), f"deepfast._C.cuda_archs = {ext.cuda_archs!r}", "empty")
    check(
        ext.torch_version == torch.__version__,
        f"deepfast._C built against torch {ext.torch_version}",
        f"but torch {torch.__version__} is installed",
    )
    check_fatbinary(ext.__file__)
    check_resources(ext.__file__)

    # 3. every op of the deepfast namespace has a CPU and a CUDA kernel in the dispatcher
    ops = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("deepfast::"))
    if check(bool(ops), f"{len(ops)} op(s) in the deepfast namespace: {', '.join(ops)}", "none registered"):
        for key in ("CPU", "CUDA"):
            missing = [n for n in ops if not torch._C._dispatch_has_kernel_for_dispatch_key(n, key)]
            check(not missing, f"every deepfast op has a {key} kernel", f"missing for {', '.join(missing)}")

    # 4. the Triton kernels ship as deepfast.kernels in the installed package
    kernels = pkg / "kernels"
    check((kernels / "__init__.py").is_file(), f"deepfast.kernels is installed in {kernels}", "file missing")
    if importlib.util.find_spec("triton") is None:
        summary.append("deepfast.kernels not imported: triton is not in this venv (files checked only)")
        print(f"  [skip] {summary[-1]}")
    else:
        import deepfast.kernels

        check(
            inside(deepfast.kernels.__file__, kernels),
            f"deepfast.kernels imports (triton {importlib.import_module('triton').__version__})",
            f"imported from {deepfast.kernels.__file__}",
        )

    # 5. what the package says about its backends here: cuda built, but no GPU to run on
    for name, st in deepfast.backends.status().items():
        print(f"  backend {name:6s} {'available' if st.available else 'unavailable'}: {st.detail}")

    # 6. the command line
    run = subprocess.run([sys.executable, "-m", "deepfast", "info"], capture_output=True, text=True, timeout=300)
    print("  $ python -m deepfast info\n" + "".join(f"    {line}\n" for line in (run.stdout + run.stderr).splitlines()))
    check(run.returncode == 0, "`python -m deepfast info` runs", f"exit status {run.returncode}")

    print("\ncuda-check summary:")
    for line in summary:
        print(f"  ok    {line}")
    for line in failures:
        print(f"  FAIL  {line}")
    return 1 if failures else 0


def _cuobjdump() -> str | None:
    tool = shutil.which("cuobjdump", path=os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin"))
    if tool is None:
        spec = importlib.util.find_spec("triton")  # Triton ships a cuobjdump
        bundled = spec and Path(spec.origin).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        tool = str(bundled) if bundled and bundled.is_file() else shutil.which("cuobjdump")
    return tool


def _demangle(names: list[str]) -> dict[str, str]:
    """Mangled -> readable kernel names (c++filt), shortened: no namespace, no argument list."""
    tool = shutil.which("c++filt")
    readable = (
        subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
        if tool
        else names
    )
    short = [
        r.removeprefix("void ").replace("(anonymous namespace)::", "").replace("deepfast::", "").split("(")[0]
        for r in readable
    ]
    return dict(zip(names, short if len(short) == len(names) else names))


def check_resources(so: str) -> None:
    """Registers, stack, shared memory and local-memory traffic of every kernel of every architecture
    (cuobjdump). Any local load / store (LDL / STL in the SASS: a spill, or an array in local memory) fails."""
    tool = _cuobjdump()
    if tool is None:
        summary.append("kernel resources not checked (no cuobjdump)")
        print(f"  [skip] {summary[-1]}")
        return
    usage = subprocess.run([tool, "--dump-resource-usage", so], capture_output=True, text=True).stdout
    kernels, arch = {}, ""
    for line in usage.splitlines():
        if m := re.match(r"\s*arch = (sm_\d+)", line):
            arch = m[1]
        elif m := re.match(r"\s*Function (\S+):", line):
            name = m[1]
        elif m := re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", line):
            kernels[(name, arch)] = {
                "reg": int(m[1]),
                "stack": int(m[2]),
                "shared": int(m[3]),
                "local": int(m[4]),
                "ldst": 0,
            }
    sass = subprocess.run([tool, "-sass", so], capture_output=True, text=True).stdout
    for key, (inside, outside) in local_traffic(sass).items():
        if key in kernels:
            kernels[key]["ldst"] = inside + outside
    names = _demangle(sorted({n for n, _ in kernels}))
    print(f"  kernel resources ({len(kernels)} kernels x architectures):")
    print(f"    {'kernel':<78} {'arch':<6} {'regs':>4} {'stack':>5} {'smem':>5} {'local ld/st':>11}")
    for (name, arch), r in sorted(kernels.items(), key=lambda kv: (names[kv[0][0]], kv[0][1])):
        print(f"    {names[name][:78]:<78} {arch:<6} {r['reg']:>4} {r['stack']:>5} {r['shared']:>5} {r['ldst']:>11}")
    spilling = sorted(
        f"{names[n]} ({a}: {r['ldst']} local loads/stores, stack {r['stack']} B)"
        for (n, a), r in kernels.items()
        if r["ldst"] or r["local"]
    )
    check(
        bool(kernels) and not spilling,
        f"{len(kernels)} kernel builds use no local memory (no spills)",
        "; ".join(spilling) or "no kernels found",
    )


def check_fatbinary(so: str) -> None:
    """Each architecture of TORCH_CUDA_ARCH_LIST has device code (a cubin) in the extension."""
    tool = _cuobjdump()
    wanted = []
    for arch in re.split(r"[;\s]+", os.environ.get("TORCH_CUDA_ARCH_LIST", "")):
        m = re.fullmatch(r"(\d+)\.(\d+)([af]?)(\+PTX)?", arch.strip())
        if m:
            wanted.append(f"sm_{m[1]}{m[2]}{m[3]}")
    if tool is None or not wanted:
        summary.append("fatbinary architectures not checked (no cuobjdump or no TORCH_CUDA_ARCH_LIST)")
        print(f"  [skip] {summary[-1]}")
        return
    out = subprocess.run([tool, "--list-elf", so], capture_output=True, text=True)
    found = sorted(set(re.findall(r"\.(sm_\d+[af]?)\.cubin", out.stdout)))
    missing = [a for a in wanted if a not in found]
    check(
        out.returncode == 0 and not missing,
        f"device code for {', '.join(found)} in the fatbinary",
        f"missing {', '.join(missing)} ({out.stderr.strip() or out.stdout.strip()[:200]})",
    )


if __name__ == "__main__":
    sys.exit(main())
