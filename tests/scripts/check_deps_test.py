#!/usr/bin/env python3
"""scripts/check-deps on the real tree (must pass) and on copies of it with one wrong include each
(must fail and name the file, the line and the header), so the check is known to bite."""

import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHECK = os.path.join(ROOT, "scripts", "check-deps")
# (file that gets the include, header it must not use): a lower module reaching up.
WRONG = [
    ("common/logging.cc", "core/log/event_log.h"),
    ("core/log/event_log.cc", "core/dispatch/dispatcher.h"),
    ("gateway/signature.cc", "admin/admin_service.h"),
]


def run(root):
    return subprocess.run([sys.executable, CHECK, "--root", root], capture_output=True, text=True)


def copy_tree(dest):
    def ignore(folder, names):
        return [n for n in names if n in ("build", ".git", "node_modules") or n.startswith("build-")]
    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)


def main():
    failures = []
    clean = run(ROOT)
    if clean.returncode != 0:
        failures.append(f"the real tree fails the check:\n{clean.stdout}{clean.stderr}")
    for path, header in WRONG:
        with tempfile.TemporaryDirectory() as tmp:
            tree = os.path.join(tmp, "src")
            copy_tree(tree)
            target = os.path.join(tree, path)
            if not os.path.exists(target):
                failures.append(f"{path} does not exist: update WRONG in this test")
                continue
            with open(target, encoding="utf-8") as f:
                lines = f.read().split("\n")
            lines.insert(1, f'#include "{header}"')
            with open(target, "w", encoding="utf-8") as f:
                f.write("\n".join(lines))
            result = run(tree)
            expected = f'{path}:2: includes "{header}"'
            if result.returncode != 1 or expected not in result.stdout:
                failures.append(f"a wrong include in {path} was not caught (exit "
                                f"{result.returncode}):\n{result.stdout}{result.stderr}")
    for failure in failures:
        print("FAIL:", failure)
    print(f"{len(WRONG) + 1 - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
