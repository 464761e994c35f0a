"""A throwaway single-node SLURM on localhost, for tests/test_slurm.py.

Debian's slurm-wlm (slurmctld + slurmd) with its own munged, ports, state folders and a GPU gres
backed by placeholder files, so `sbatch --gpus=1` is accepted on a machine without GPUs. With
`accounting=True` it also runs job accounting as a site does: Debian's slurmdbd on a MariaDB server
of its own (a fresh data folder, localhost only, no grant tables), with the cluster, an account
`scorebench` and root's association registered, so `sacct` and `sacctmgr` answer. Every daemon is a
child of this process and is stopped by its PID; nothing that was running before is touched.

A few files have to live outside the temporary folder: /etc/slurm/slurm.conf (and gres.conf and
slurmdbd.conf beside it).
snakemake-executor-plugin-slurm-jobstep starts `srun` inside each job with every SLURM_* variable
except the job's identity removed, SLURM_CONF included, so the clients inside a job only find the
configuration at its compiled-in default path. A slurm.conf already there that this module did not
write (a real cluster's) is never replaced: the tests skip instead.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

CONF_DIR = Path("/etc/slurm")
MARKER = "# written by scorebench tests/slurm_cluster.py; removed when the test cluster stops"
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "munged")
ACCOUNTING_PACKAGES = ("slurmdbd", "mariadb-server")
ACCOUNTING_BINARIES = ("slurmdbd", "sacct", "sacctmgr", "mariadbd", "mariadb-install-db")
ACCOUNT = "scorebench"


class SlurmUnavailable(Exception):
    """This machine cannot host the test cluster (not root, no apt, a real SLURM config present)."""


def _sbin_path() -> str:
    """PATH with the sbin folders, where Debian puts the daemons (missing from some users' PATH)."""
    parts = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(parts + [p for p in ("/usr/sbin", "/sbin") if p not in parts])


def _missing_binaries(accounting: bool = False) -> list[str]:
    wanted = BINARIES + (ACCOUNTING_BINARIES if accounting else ())
    return [b for b in wanted if shutil.which(b, path=_sbin_path()) is None]


def ensure_installed(timeout: float = 600, accounting: bool = False) -> None:
    """Install slurm-wlm and munge (and, for accounting, slurmdbd and MariaDB) from the Debian
    archive unless they are already there. The packages' own services are not started: Debian's
    policy-rc.d in containers denies it, and this module starts its own daemons either way.

    Raises:
        SlurmUnavailable: not root, no apt-get, or apt-get failed (the reason is in the message).
    """
    if os.geteuid() != 0:
        raise SlurmUnavailable("the test cluster needs root (to install slurm-wlm, write /etc/slurm and run "
                               "slurmd)")  # fmt: skip
    if not _missing_binaries(accounting):
        return
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable("SLURM is not installed and there is no apt-get to install it with")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    packages = PACKAGES + (ACCOUNTING_PACKAGES if accounting else ())
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *packages]):
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SlurmUnavailable(f"`{' '.join(cmd)}` took more than {timeout:.0f} s") from None
        if proc.returncode != 0:
            raise SlurmUnavailable(f"`{' '.join(cmd)}` failed: {(proc.stderr or proc.stdout)[-500:]}")
    if _missing_binaries(accounting):
        raise SlurmUnavailable(f"apt-get installed {packages} but {_missing_binaries(accounting)} are still missing")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """slurmctld + slurmd + munged on localhost: one node, one partition, two placeholder GPUs.

    Args:
        root: an empty folder for keys, sockets, state, spool and daemon logs.
        partition: the partition name jobs must ask for.
        accounting: also run slurmdbd on a MariaDB server of its own (sacct works), as most sites do.
    """

    def __init__(self, root, partition: str = "sbtest", accounting: bool = False):
        self.root = Path(root)
        self.partition = partition
        self.accounting = accounting
        self.account = ACCOUNT
        self.node = socket.gethostname().split(".")[0]
        self.env = dict(os.environ, SLURM_CONF=str(CONF_DIR / "slurm.conf"), PATH=_sbin_path())
        self._daemons: dict[str, subprocess.Popen] = {}
        self._wrote_conf: list[Path] = []

    # ------------------------------------------------------------------ start

    def start(self, timeout: float = 60) -> "SlurmCluster":
        """Write the configuration, start munged, slurmctld and slurmd, wait until the node is idle."""
        self._claim_conf_dir()
        self.root.chmod(0o755)
        munge = self.root / "munge"
        munge.mkdir(mode=0o711)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))  # a munge key is random bytes; this cluster's own
        key.chmod(0o400)
        for name in ("state", "spool", "log"):
            (self.root / name).mkdir()
        for i in range(2):
            (self.root / f"fakegpu{i}").touch()  # any file will do: slurmd only warns it is no device
        socket_path = munge / "munge.socket"
        files = [f"--socket={socket_path}", f"--key-file={key}", f"--pid-file={munge / 'munged.pid'}",
                 f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'munged.seed'}"]  # fmt: skip
        self._spawn("munged", ["munged", "--force", "--foreground", *files])
        self._wait(lambda: socket_path.exists(), timeout, "munged to create its socket")

        self._dbd_port = _free_port() if self.accounting else None
        self._write_conf("slurm.conf", self._slurm_conf(socket_path))
        self._write_conf("gres.conf", f"NodeName={self.node} Name=gpu Type=fake File={self.root}/fakegpu[0-1]\n")
        if self.accounting:
            self._start_accounting(socket_path, timeout)
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(CONF_DIR / "slurm.conf")])
        self._wait(lambda: "UP" in self._out(["scontrol", "ping"]), timeout, "slurmctld to answer")
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(CONF_DIR / "slurm.conf")])
        self._wait(lambda: self._out(["sinfo", "-h", "-p", self.partition, "-o", "%T"]).strip() == "idle",
                   timeout, "the node to become idle")  # fmt: skip
        return self

    def _start_accounting(self, munge_socket: Path, timeout: float) -> None:
        """MariaDB (own data folder, 127.0.0.1 only, no grant tables), then slurmdbd on it; register
        the cluster, the account and root's association, as a site's administrator would."""
        r = self.root
        db_port = _free_port()
        data = r / "mariadb"
        install = subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                                  "--auth-root-authentication-method=normal", "--skip-test-db"],
                                 env=self.env, capture_output=True, text=True, timeout=300)  # fmt: skip
        if install.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed:\n{install.stdout[-2000:]}{install.stderr[-2000:]}")
        self._spawn("mariadbd", ["mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={r}/mariadb.sock",
                                 f"--port={db_port}", "--bind-address=127.0.0.1", "--user=root", "--skip-grant-tables",
                                 f"--pid-file={r}/mariadb.pid", "--innodb-buffer-pool-size=32M"])  # fmt: skip
        self._wait(lambda: _port_open(db_port), timeout, "mariadbd to accept connections")
        dbd = f"""{MARKER}
AuthType=auth/munge
AuthInfo=socket={munge_socket}
DbdHost={self.node}
DbdAddr=127.0.0.1
DbdPort={self._dbd_port}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=root
StorageLoc=slurm_acct_db
PidFile={r}/slurmdbd.pid
LogFile={r}/log/slurmdbd.log
"""
        self._write_conf("slurmdbd.conf", dbd, mode=0o600)
        self._spawn("slurmdbd", ["slurmdbd", "-D"])
        self._wait(lambda: self._sacctmgr("list", "cluster").returncode == 0, timeout, "slurmdbd to answer")
        for args in (("add", "cluster", "scorebench_test"), ("add", "account", self.account),
                     ("add", "user", "root", f"account={self.account}")):  # fmt: skip
            proc = self._sacctmgr(*args)
            if proc.returncode != 0 and "Nothing new added" not in proc.stdout + proc.stderr:
                raise RuntimeError(f"sacctmgr {' '.join(args)} failed: {proc.stdout}{proc.stderr}")

    def _sacctmgr(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run(["sacctmgr", "-i", *args], env=self.env, capture_output=True, text=True, timeout=60)

    def _slurm_conf(self, munge_socket: Path) -> str:
        cpus = os.cpu_count() or 1
        r = self.root
        if self.accounting:
            # AccountingStoragePass names the munge socket that clients use to reach slurmdbd
            accounting = (f"AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=127.0.0.1\n"
                          f"AccountingStoragePort={self._dbd_port}\nAccountingStoragePass={munge_socket}")  # fmt: skip
        else:
            accounting = "AccountingStorageType=accounting_storage/none"
        return f"""{MARKER}
ClusterName=scorebench_test
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
{accounting}
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# the configured CPUs and memory count, whatever the machine reports
SlurmdParameters=config_overrides
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
# finished jobs stay visible to squeue for an hour (the executor polls with squeue)
MinJobAge=3600
KillWait=30
ReturnToService=2
MailProg=/bin/true
GresTypes=gpu
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=16000 Gres=gpu:fake:2 State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""

    def _claim_conf_dir(self) -> None:
        for name in ("slurm.conf", "gres.conf", "slurmdbd.conf"):
            path = CONF_DIR / name
            if not path.exists():
                continue
            text = path.read_text(errors="replace")
            if MARKER not in text:
                raise SlurmUnavailable(f"{path} exists and was not written by this test (a real SLURM "
                                       "configuration?); not replacing it")  # fmt: skip
            owner = re.search(r"^# owner pid (\d+)", text, re.M)
            if owner and int(owner.group(1)) != os.getpid() and _alive(int(owner.group(1))):
                raise SlurmUnavailable(f"another test cluster (pid {owner.group(1)}) is using {path}")

    def _write_conf(self, name: str, text: str, mode: int = 0o644) -> None:
        CONF_DIR.mkdir(parents=True, exist_ok=True)
        path = CONF_DIR / name
        tmp = path.with_name(f".{name}.tmp")
        body = text.split("\n", 1)[1] if text.startswith(MARKER) else text
        tmp.write_text(f"{MARKER}\n# owner pid {os.getpid()}\n{body}")
        tmp.chmod(mode)  # slurmdbd refuses a slurmdbd.conf that others can read
        os.replace(tmp, path)
        self._wrote_conf.append(path)

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "w")
        self._daemons[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        log.close()

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self._daemons.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}:\n"
                                       + self.daemon_logs())  # fmt: skip
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}:\n{self.daemon_logs()}")

    # ------------------------------------------------------------------ use

    def _out(self, cmd: list[str]) -> str:
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=30)
        return proc.stdout

    def jobs(self) -> dict[str, dict]:
        """Every job the controller still knows (MinJobAge keeps finished ones): id -> `scontrol` fields
        (JobState, Comment, TresPerJob, ExitCode, ...)."""
        jobs = {}
        for line in self._out(["scontrol", "show", "job", "-o"]).splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            if "JobId" in fields:
                jobs[fields["JobId"]] = fields
        return jobs

    def scancel(self, job_id: str) -> None:
        subprocess.run(["scancel", str(job_id)], env=self.env, check=True, timeout=30)

    def sacct_state(self, job_id: str) -> str:
        """The job's State as the executor plugin's sacct query prints it (accounting clusters only)."""
        out = self._out(["sacct", "-X", "--parsable2", "--noheader", "--format=JobIdRaw,State", "-j", str(job_id)])
        return dict(line.split("|", 1) for line in out.splitlines() if "|" in line).get(str(job_id), "")

    def daemon_logs(self, tail: int = 3000) -> str:
        texts = []
        for path in sorted(self.root.rglob("*.log")) + sorted(self.root.rglob("*.out")):
            texts.append(f"--- {path}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(texts)

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """Cancel this cluster's jobs, stop the daemons started here (by PID), remove the config files."""
        if "slurmctld" in self._daemons and self._daemons["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--partition", self.partition], env=self.env, capture_output=True, timeout=30)
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            proc = self._daemons.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for path in self._wrote_conf:
            if path.exists() and MARKER in path.read_text(errors="replace"):
                path.unlink()
        self._wrote_conf.clear()
        shutil.rmtree(self.root, ignore_errors=True)
