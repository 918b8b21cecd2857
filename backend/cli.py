"""`autopkg`: run the service and workers, load boundaries, and drive the API from scripts."""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import gc
import ipaddress
import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Iterator

from backend.settings import PREFIX, Settings

log = logging.getLogger("autopkg")
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment and this command's options."""
    return Settings.from_env(host=getattr(args, "host", None), port=getattr(args, "port", None),
                             workers=getattr(args, "workers", None), api_processes=getattr(args, "api_processes", None))


def _service(args: argparse.Namespace):
    from backend.service import build_service

    return build_service(_settings(args))


def _consumer(service, workers: int):
    from huey.consumer import Consumer

    # Worker processes, not threads: clipping is CPU-bound and threads share one GIL. Huey forks
    # them from this process once it holds no SQLite connection (it closes the queue's storage
    # itself; the boundary store is closed here and reconnects in each child) and no open GDAL
    # dataset. An idle worker waits in the storage's dequeue and wakes when a task is enqueued
    # (backend/queue_storage.py; Redis: BRPOP); max_delay bounds its waits after a queue error.
    service.boundaries.close()
    return Consumer(service.queue.huey, workers=workers, worker_type="process", check_worker_health=True, max_delay=0.1)


#: Niceness added to the workers `serve` starts: when they use every core, the API still gets the
#: CPU first, so a busy worker never delays a status poll or a search; idle CPU still goes to the
#: workers. 200 closed-loop connections during jobs, back to back on the shared 2-core machine: +5
#: 357 and 1028 requests/s (the API got 0.32 and 0.66 of a core), +19 1127 and 1411 (0.81, 0.72).
SERVE_WORKER_NICENESS = 19


#: The signals that stop `serve` and `worker`.
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while this process forks; one that arrived is delivered on leaving.

    Python runs a signal that arrives during fork() in its after-fork hooks (logging's lock
    release), where a KeyboardInterrupt is dropped ("Exception ignored"): the stop was lost and
    `serve` ran on. A forked child starts with them held: it releases them itself."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the process that started this one ends, even killed."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _serving(app):
    """`app`, once every object made at start-up is out of the garbage collector's walks
    (gc.freeze): under load its full collections walked them all (about 130,000 objects), up to
    110 ms each, a dozen times in 13 s, and made most of the API's tail latency."""
    gc.collect()
    gc.freeze()
    return app


def _port_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port that the other API processes of `serve` bind as well
    (SO_REUSEPORT, same user only): the kernel spreads new connections over them evenly, by a
    hash of each. (On one shared socket, the process that woke first took most of a burst of
    connections: 147 of 210.) It listens once uvicorn serves on it: until then a connection is
    refused, not left waiting for a process still starting."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _claim_port(port: int) -> socket.socket:
    """`serve`'s exclusive claim on `port` on this machine, held until it ends (even killed): an
    abstract Unix socket named after the port (no file anywhere). The API sockets share the port
    with SO_REUSEPORT, which would let a second `serve` of the same user bind it as well and
    silently take half of the connections; the claim makes that a clear error instead."""
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        claim.bind(f"\0ccg-autopkg-serve-port-{port}")
    except OSError:
        claim.close()
        raise OSError(errno.EADDRINUSE, f"port {port} is already served by another `autopkg serve` on this machine") from None
    return claim


def _serve_api(app, sock: socket.socket, access_log: bool) -> None:
    """uvicorn on `sock` until SIGINT or SIGTERM (httptools and uvloop when installed, uvicorn's
    "auto"; no access log unless asked: a line per request costs about a quarter of a
    millisecond, and clients poll)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="info", access_log=access_log))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # the SIGINT uvicorn stopped on, raised again once it stopped
        return
    if not server.started:
        raise SystemExit("autopkg: the API did not start; the log above says why")


def _api_process(access_log: bool, built, serve_pid: int) -> None:
    """One more API process of `serve` (a fresh interpreter, spawned; its settings come from the
    environment `serve` gave it); sets the event `built` once its application is built."""
    from backend.api import create_app
    from backend.service import build_service

    _die_with_parent()  # `serve` killed: no API process is left holding its port
    if os.getppid() != serve_pid:
        return  # it ended before that request
    settings = Settings.from_env()
    app = _serving(create_app(build_service(settings)))
    sock = _port_socket(settings.host, settings.port)
    built.set()
    _serve_api(app, sock, access_log)


def _start_api_processes(processes: list, count: int, access_log: bool) -> None:
    """`count` more API processes (added to `processes` as they start, for the caller to stop);
    returns once each has built its application (or ended), so that `serve` is ready when all
    are: a process still starting took CPU from the first one's answers (idle search p50 0.46 ->
    1.1 ms on the loaded 2-core machine)."""
    context = multiprocessing.get_context("spawn")
    events = []
    for _ in range(count):
        events.append(context.Event())
        processes.append(context.Process(target=_api_process, args=(access_log, events[-1], os.getpid())))
        processes[-1].start()
    for process, built in zip(processes, events):
        while not built.wait(0.1) and process.is_alive():
            pass


def _stop_processes(processes: list, timeout: float = 20) -> None:
    """SIGTERM (uvicorn: finish the requests under way), then SIGKILL after `timeout` s."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def _start_worker_process(workers: int, verbose: bool) -> subprocess.Popen:
    """`autopkg worker` as a child process of `serve` (a fresh interpreter: nothing of the API
    process is inherited), lowered in priority and stopped with its parent (PR_SET_PDEATHSIG).
    Call it with the stop signals held (`_stop_signals_held`)."""

    def lower_priority_and_die_with_parent() -> None:  # in the child, before exec
        os.nice(SERVE_WORKER_NICENESS)
        _die_with_parent()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # held by `serve` while it forked

    command = [sys.executable, "-m", "backend.cli", *(["--verbose"] if verbose else []), "worker", "--workers", str(workers)]
    return subprocess.Popen(command, preexec_fn=lower_priority_and_die_with_parent)


def _stop_worker_process(worker: subprocess.Popen, timeout: float = 60) -> None:
    """SIGINT: the consumer finishes the tasks it is running (as `serve` did before), then exits."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGINT)
        try:
            worker.wait(timeout)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _check_exposure(settings: Settings, allow_public_without_token: bool) -> None:
    """Loopback by default; another address serves the network, so only with a token (or an
    explicit override for a trusted network, logged as a warning at every start)."""
    if _is_loopback(settings.host) or settings.api_token:
        return
    if not allow_public_without_token:
        raise SystemExit(
            f"autopkg: refusing to serve on {settings.host} without an API token: anyone who can reach"
            " it could read every package and run jobs. Set CCGAUTOPKG_API_TOKEN, or serve on 127.0.0.1;"
            " on a trusted network only, add --allow-public-without-token.")
    log.warning("SERVING ON %s WITHOUT AN API TOKEN (--allow-public-without-token): every package and"
                " job is open to anyone who can reach this address", settings.host)


def cmd_serve(args: argparse.Namespace) -> int:
    """The API in this process (and more API processes); the workers in a child process (`autopkg worker`)."""
    from backend.api import create_app

    settings = _settings(args)
    _check_exposure(settings, args.allow_public_without_token)
    service = _service(args)
    settings = service.settings
    if settings.seed_boundaries and service.boundaries.count() == 0:
        report = service.boundaries.seed_natural_earth(settings.world_map_gpkg)
        log.info("seeded boundaries from %s: %d loaded, %d skipped", settings.world_map_gpkg, report.loaded, report.skipped)
    worker, api_processes = None, []
    sock = _port_socket(settings.host, settings.port)  # the port taken: a clear error, nothing started
    try:
        claim = _claim_port(sock.getsockname()[1])
    except OSError:
        sock.close()
        raise
    try:
        if settings.workers > 0:
            with _stop_signals_held():  # a stop while forking interrupts here, once `worker` is set
                worker = _start_worker_process(settings.workers, args.verbose)
        base = f"http://{settings.host}:{settings.port}"
        print(f"CCG AutoPackaging {base}\n  API:      {base}/v1/processors\n  ReDoc:    {base}/redoc\n"
              f"  Packages: {base}/packages/\n  Data dir: {settings.data_dir}\n  Workers:  {settings.workers}\n"
              f"  API processes: {settings.api_processes}", flush=True)
        # One event loop uses one core: the API runs in this process and api_processes - 1
        # spawned ones, each on its own socket of the port. Each builds its own service from
        # these settings; what they share (boundaries, the queue, packages) is in the database,
        # the queue's storage and files, not in memory.
        os.environ.update(settings.environ(), **{f"{PREFIX}PORT": str(sock.getsockname()[1])})
        app = _serving(create_app(service))
        _start_api_processes(api_processes, settings.api_processes - 1, args.access_log)
        _serve_api(app, sock, args.access_log)
    finally:
        _stop_processes(api_processes)
        if worker:
            _stop_worker_process(worker)
        claim.close()
    return 0


#: GDAL settings of worker processes, unless the environment sets them. By default GDAL lists a
#: file's whole folder at every open to look for side-car files (.ovr, .aux.xml, .msk...): 0.18 ms
#: per open of a STORM GeoTIFF in its source cache folder (420 entries: the files, their fetch
#: records and locks), 25 ms of a 140-file job, and more as the folders grow. TRUE: GDAL looks
#: for those side-cars one by one (stat), so it still finds them (EMPTY_DIR would not).
WORKER_GDAL_DEFAULTS = {"GDAL_DISABLE_READDIR_ON_OPEN": "TRUE"}


def _worker_environment() -> None:
    """WORKER_GDAL_DEFAULTS into this process's environment (GDAL reads it at each use; the
    worker processes Huey forks inherit it)."""
    for name, value in WORKER_GDAL_DEFAULTS.items():
        os.environ.setdefault(name, value)


def cmd_worker(args: argparse.Namespace) -> int:
    """Worker processes only (scale-out: run on any machine sharing the queue and the package storage)."""
    _worker_environment()
    service = _service(args)
    for line in service.queue.clean_start():
        log.info("clean start: %s", line)
    consumer = _consumer(service, service.settings.workers)
    # Huey installs its stop handlers only after forking its scheduler and workers: a SIGINT in
    # between was dropped in an after-fork hook or raised KeyboardInterrupt while the forked
    # children (which ignore SIGINT) lived on, and SIGTERM killed this process and left them as
    # orphans. Installed first, a stop at any moment is a graceful stop once they are started.
    consumer._set_signal_handlers()
    consumer.run()
    return 0


def cmd_boundaries_load(args: argparse.Namespace) -> int:
    from backend.boundaries import open_store

    store = open_store(Settings.from_env())
    report = store.load_file(args.file, layer=args.layer, name_column=args.name_column,
                             long_name_column=args.long_name_column or args.name_column, admin_level=args.admin_level)
    for message in report.messages:
        print(message, file=sys.stderr)
    print(f"loaded {report.loaded}, skipped {report.skipped}")
    return 0 if report.loaded or not report.skipped else 1


def server_url(environ: dict[str, str] | None = None) -> str:
    """`CCGAUTOPKG_URL`, else the address `autopkg serve` listens on (`CCGAUTOPKG_HOST`/`_PORT`)."""
    environ = os.environ if environ is None else environ
    if environ.get("CCGAUTOPKG_URL"):
        return environ["CCGAUTOPKG_URL"]
    settings = Settings.from_env(environ)
    host = "127.0.0.1" if settings.host in ("", "0.0.0.0") else "::1" if settings.host == "::" else settings.host
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.port}"


def _client(args: argparse.Namespace):
    from backend.client import Client

    args.url = args.url or server_url()
    return Client(args.url, token=args.token)


def _print_json(value: Any) -> None:
    from pydantic import TypeAdapter

    print(TypeAdapter(Any).dump_json(value, indent=2).decode())


def _boundary(client, typed: str) -> str:
    """The boundary name for what was typed (any case, long name); `NoMatch` says what was meant."""
    from backend.suggest import BoundaryNames

    return BoundaryNames(client.boundaries()).resolve(typed)


def _processor_names(client, typed: list[str]) -> list[str]:
    from backend.suggest import ProcessorNames

    names = ProcessorNames(client.processors())
    return [names.resolve(t) for t in typed]


def cmd_boundaries_search(args: argparse.Namespace) -> int:
    if args.name is None and (args.latitude is None or args.longitude is None):
        raise SystemExit("give a NAME, or --latitude and --longitude")
    results = _client(args).search_boundaries(name=args.name, latitude=args.latitude, longitude=args.longitude)
    for b in results:
        print(f"{b.name}\t{b.name_long}")
    if not results:
        where = repr(args.name) if args.name else f"the point {args.latitude}, {args.longitude}"
        print(f"autopkg: no boundary matches {where}", file=sys.stderr)
    return 0 if results else 1


def cmd_processors(args: argparse.Namespace) -> int:
    for dataset in _client(args).processors():
        for v in dataset.versions:
            print(f"{v.name}\t{v.data_title or v.description}\t{v.data_license.name}")
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    from backend.progress import count, human_bytes

    client = _client(args)
    boundary = _boundary(client, args.boundary)
    total_bytes = total_files = 0
    for name in _processor_names(client, args.processor):
        estimate = client.estimate(processor=name, boundary_name=boundary)
        total_bytes += estimate.bytes or 0
        total_files += estimate.files or 0
        print(f"{name}\t{count(estimate.files, 'file')}\t{human_bytes(estimate.bytes or 0)}\t{estimate.method}")
    print(f"total for {boundary}\t{count(total_files, 'file')}\t{human_bytes(total_bytes)}")
    return 0


def cmd_jobs_submit(args: argparse.Namespace) -> int:
    from backend.progress import JobProgressView

    client = _client(args)
    boundary = _boundary(client, args.boundary)
    job_id = client.submit_job(boundary_name=boundary, processors=_processor_names(client, args.processor), replace=args.replace)
    print(job_id, flush=True)
    if not args.wait:
        return 0
    view = JobProgressView(sys.stderr, terminal=sys.stderr.isatty())
    try:
        status = client.wait(job_id, on_progress=view.update)
    except KeyboardInterrupt:
        print(f"\nautopkg: stopped waiting; job {job_id} goes on in the backend.\n"
              f"  follow it: autopkg jobs status {job_id}\n  cancel it: autopkg jobs cancel {job_id}", file=sys.stderr)
        return 130
    package = next((p.uri for p in client.packages() if p.boundary_name == boundary), None)
    view.finish(status, client.url(package) if package else "none (the job wrote nothing)")
    return 1 if any(p.job_status in ("FAILURE", "REVOKED") for p in status.job_group_processors) else 0


def cmd_jobs_list(args: argparse.Namespace) -> int:
    client = _client(args)
    boundary = _boundary(client, args.boundary) if args.boundary else None
    for job in client.jobs(boundary_name=boundary, state=args.state, limit=args.limit):
        processors = ", ".join(p.processor_name for p in job.job_group_processors)
        print(f"{job.job_id}\t{job.created[:19]}\t{job.job_group_state}\t{job.job_group_percent_complete}%\t{job.boundary_name}\t{processors}")
    return 0


def cmd_jobs_status(args: argparse.Namespace) -> int:
    _print_json(_client(args).job(args.job_id))
    return 0


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    _print_json(_client(args).cancel_job(args.job_id))
    return 0


def cmd_packages(args: argparse.Namespace) -> int:
    from backend.progress import human_bytes

    client = _client(args)
    if args.delete:
        _print_json(client.delete_package(_boundary(client, args.boundary)))
    elif args.boundary and args.json:
        _print_json(client.package(_boundary(client, args.boundary)))
    elif args.boundary:
        package = client.package(_boundary(client, args.boundary))
        print(f"{package.boundary_name}\t{client.url(package.uri)}")
        for dataset in package.datasets:
            print(f"  {dataset.processor}\t{dataset.title}")
            for f in dataset.files:
                print(f"    {f.path}\t{human_bytes(f.bytes or 0)}")
    else:
        for p in client.packages():
            print(f"{p.boundary_name}\t{client.url(p.uri)}")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    for variable, default, help_text in Settings.documentation():
        print(f"{variable}={default}\n    {help_text}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autopkg", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    url = argparse.ArgumentParser(add_help=False)
    url.add_argument("--url", help="backend URL (default: env CCGAUTOPKG_URL, else http://CCGAUTOPKG_HOST:CCGAUTOPKG_PORT)")
    url.add_argument("--token", default=os.environ.get("CCGAUTOPKG_API_TOKEN") or None, help="API token (env CCGAUTOPKG_API_TOKEN)")

    p = sub.add_parser("serve", help="run the API, and the workers in a child process")
    p.add_argument("--host"), p.add_argument("--port", type=int), p.add_argument("--workers", type=int, help="0: API only")
    p.add_argument("--api-processes", type=int, help="API processes on the port (default: 2, 1 on one core)")
    p.add_argument("--allow-public-without-token", action="store_true",
                   help="serve a non-loopback address without CCGAUTOPKG_API_TOKEN (trusted networks only; logged)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("worker", help="run worker processes only")
    p.add_argument("--workers", type=int)
    p.set_defaults(func=cmd_worker)
    p = sub.add_parser("settings", help="list every setting with its default")
    p.set_defaults(func=cmd_settings)

    boundaries = sub.add_parser("boundaries", help="load and search boundaries").add_subparsers(dest="action", required=True)
    p = boundaries.add_parser("load", help="load boundaries from GeoJSON, GeoPackage or Shapefile")
    p.add_argument("file"), p.add_argument("--layer")
    p.add_argument("--name-column", required=True), p.add_argument("--long-name-column")
    p.add_argument("--admin-level", type=int, default=0)
    p.set_defaults(func=cmd_boundaries_load)
    p = boundaries.add_parser("search", parents=[url], help="search by name or point")
    p.add_argument("name", nargs="?"), p.add_argument("--latitude", type=float), p.add_argument("--longitude", type=float)
    p.set_defaults(func=cmd_boundaries_search)

    p = sub.add_parser("processors", parents=[url], help="list processors")
    p.set_defaults(func=cmd_processors)
    p = sub.add_parser("estimate", parents=[url], help="estimated output size of processors for a boundary")
    p.add_argument("--boundary", required=True, help="name or long name, any case")
    p.add_argument("--processor", action="append", required=True, help='"dataset.version" (repeat for several)')
    p.set_defaults(func=cmd_estimate)

    jobs = sub.add_parser("jobs", help="submit, list and follow jobs").add_subparsers(dest="action", required=True)
    p = jobs.add_parser("submit", parents=[url], help="submit a job")
    p.add_argument("--boundary", required=True, help="name or long name, any case")
    p.add_argument("--processor", action="append", required=True, help='"dataset.version" (repeat for several)')
    p.add_argument("--replace", action="store_true", help="produce datasets already in the package again")
    p.add_argument("--wait", action="store_true", help="show progress until the job completes, then a summary")
    p.set_defaults(func=cmd_jobs_submit)
    p = jobs.add_parser("list", parents=[url], help="recent jobs, newest first")
    p.add_argument("--boundary"), p.add_argument("--state", choices=["PENDING", "EXECUTING", "COMPLETE"])
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_jobs_list)
    p = jobs.add_parser("status", parents=[url]); p.add_argument("job_id"); p.set_defaults(func=cmd_jobs_status)
    p = jobs.add_parser("cancel", parents=[url]); p.add_argument("job_id"); p.set_defaults(func=cmd_jobs_cancel)

    p = sub.add_parser("packages", parents=[url], help="list packages, or show (or delete) one")
    p.add_argument("boundary", nargs="?")
    p.add_argument("--json", action="store_true", help="the API's whole answer for BOUNDARY (with its geometry)")
    p.add_argument("--delete", action="store_true", help="delete the package BOUNDARY")
    p.set_defaults(func=cmd_packages)
    return parser


def _connection_reason(exc: BaseException) -> str:
    """The socket error at the root of a requests/urllib3 connection error ("Connection refused")."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    return exc.__class__.__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "delete", False) and not args.boundary:
        parser.error("--delete needs the BOUNDARY to delete")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from backend.client import ClientError, requests  # the client quiets requests' import-time warning
    from backend.errors import BackendError

    try:
        return args.func(args)
    except (ClientError, BackendError, ValueError) as exc:
        print(f"autopkg: {exc}", file=sys.stderr)
        return 2
    except requests.ConnectionError as exc:  # before OSError (its base): urllib3's message is unreadable
        print(f"autopkg: cannot reach {getattr(args, 'url', 'the backend')}: {_connection_reason(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"autopkg: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # SIGINT before `serve` or `worker` handles it itself: stopped
        return 130


if __name__ == "__main__":
    sys.exit(main())
