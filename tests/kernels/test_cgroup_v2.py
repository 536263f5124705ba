"""cgroup v2 detection falls back with a reason where it cannot be used, and writes the kernel's formats.

The kernel side (a delegated cgroup v2 with cpu and memory) is not available on the
test machine; these tests run the detection against the machine as it is, and the
writes against a directory laid out like cgroupfs, checking the exact file formats
the kernel reads (`cpu.max` is "QUOTA PERIOD", `memory.max` bytes or "max").
"""

from __future__ import annotations

from pathlib import Path

from kernels.cgroup_v2 import detect_cgroup_v2


def fake_cgroupfs(tmp_path: Path, controllers: str) -> tuple[Path, Path, Path]:
    mount = tmp_path / "cgroup"
    own = mount / "user.slice" / "node.scope"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text(controllers + "\n")
    (own / "cgroup.subtree_control").write_text("")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 0:20 / /proc rw,nosuid - proc proc rw\n"
        f"35 25 0:30 / {mount} rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw\n"
    )
    proc_cgroup = tmp_path / "self-cgroup"
    proc_cgroup.write_text("0::/user.slice/node.scope\n")
    return mountinfo, proc_cgroup, own


def test_detection_on_this_machine_never_raises() -> None:
    cgroup, reason = detect_cgroup_v2()
    assert reason
    if cgroup is not None:
        cgroup.close()


def test_missing_controllers_fall_back_with_reason(tmp_path: Path) -> None:
    mountinfo, proc_cgroup, _ = fake_cgroupfs(tmp_path, "hugetlb pids")
    cgroup, reason = detect_cgroup_v2(mountinfo=mountinfo, proc_cgroup=proc_cgroup)
    assert cgroup is None and "lacks controllers: cpu, memory" in reason


def test_no_cgroup2_mount(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("22 1 0:20 / /proc rw - proc proc rw\n")
    cgroup, reason = detect_cgroup_v2(mountinfo=mountinfo, proc_cgroup=tmp_path / "none")
    assert cgroup is None and reason == "no cgroup v2 filesystem is mounted"


def test_delegated_tree_gets_limits_in_kernel_formats(tmp_path: Path) -> None:
    mountinfo, proc_cgroup, own = fake_cgroupfs(tmp_path, "cpuset cpu io memory pids")
    cgroup, reason = detect_cgroup_v2(mountinfo=mountinfo, proc_cgroup=proc_cgroup, name="ileices-t")
    assert cgroup is not None, reason
    assert (own / "cgroup.subtree_control").read_text() == "+cpu +memory\n"
    assert cgroup.group == own / "ileices-t"
    cgroup.set_cpu_cores(0.5)
    assert (cgroup.group / "cpu.max").read_text() == "50000 100000\n"
    cgroup.set_cpu_cores(None)
    assert (cgroup.group / "cpu.max").read_text() == "max 100000\n"
    leaf = cgroup.create_task_group("task-1", 256 * 1024**2)
    assert (leaf / "memory.max").read_text() == f"{256 * 1024**2}\n"
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert cgroup.oom_kills(leaf) == 1
    (leaf / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\n")
    assert cgroup.cpu_seconds(leaf) == 1.5
    cgroup.freeze(True)
    assert (cgroup.group / "cgroup.freeze").read_text() == "1\n"
