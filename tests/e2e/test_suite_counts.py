"""tests/run.sh counts honestly: a fuzz target replaying its seed corpus is
one test, however many files the corpus holds, and a replay that crashes
is one failure. run.sh is run on a scratch tree holding only itself, two
stand-in fuzz targets and their corpora (the other parts find nothing
there and count as failures of their own, which this test ignores)."""

import os
import re
import shutil
import stat
import subprocess
import tempfile

from harness import ROOT, E2ETest

TARGETS = {
    # name: (the stand-in's body, number of corpus files)
    "fine": ("exit 0", 5),
    "crashing": ("kill -SEGV $$", 7),
}


class FuzzReplayCounts(E2ETest):
    def test_one_test_per_target(self):
        tree = tempfile.mkdtemp(prefix="luasmtpd-runsh-")
        self.addCleanup(shutil.rmtree, tree, True)
        os.makedirs(os.path.join(tree, "tests"))
        os.makedirs(os.path.join(tree, "build"))
        shutil.copy(os.path.join(ROOT, "tests", "run.sh"), os.path.join(tree, "tests", "run.sh"))
        for name, (body, files) in TARGETS.items():
            exe = os.path.join(tree, "build", "fuzz_" + name)
            with open(exe, "w") as f:
                f.write("#!/bin/sh\n%s\n" % body)
            os.chmod(exe, os.stat(exe).st_mode | stat.S_IXUSR)
            corpus = os.path.join(tree, "tests", "fuzz", "corpus", name)
            os.makedirs(corpus)
            for i in range(files):
                with open(os.path.join(corpus, "seed%d" % i), "w") as f:
                    f.write("seed %d\n" % i)
        r = subprocess.run(["sh", os.path.join(tree, "tests", "run.sh")], cwd=tree, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=120)
        out = r.stdout.decode("utf-8", "replace")
        counts = dict((m.group(1), (int(m.group(2)), int(m.group(3))))
                      for m in re.finditer(r"^fuzz (\w+): (\d+) passed, (\d+) failed$", out, re.M))
        self.assertEqual(counts, {"fine": (1, 0), "crashing": (0, 1)}, out[-3000:])
        self.assertNotEqual(r.returncode, 0)
