"""The ``cytocompare`` command line: a thin layer over config, runner, registry and reports."""

from __future__ import annotations

import json
import shlex
import sys
import traceback
from pathlib import Path

import click

from cytocompare import __version__
from cytocompare.errors import CytocompareError
from cytocompare.registry import KINDS, METHOD_KINDS


class _Group(click.Group):
    """Every way a command can end, as one clear message and an exit code (no traceback):

    * cytocompare's own errors and an OSError naming its file (permissions, a full disk):
      ``Error: ...``, exit 2;
    * Ctrl-C: exit 130, saying that rerunning the same command resumes (for ``run``);
    * anything else: one line naming the error and the file holding its full traceback, exit 1.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["cytocompare.argv"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        from cytocompare.runner import describe_error, is_unexpected, write_traceback_elsewhere

        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            argv = ctx.meta.get("cytocompare.argv", [])
            again = shlex.join(["cytocompare", *argv])
            hint = (f"; rerunning the same command resumes: {again}" if argv[:1] == ["run"] else "")
            click.secho(f"Interrupted{hint}", fg="yellow", err=True)
            ctx.exit(130)
        except Exception as exc:
            if not is_unexpected(exc):
                click.secho(f"Error: {describe_error(exc)}", fg="red", err=True)
                ctx.exit(2)
            path = getattr(exc, "traceback_file", None)
            if path is None:
                path = write_traceback_elsewhere("".join(traceback.format_exception(exc)))
            where = f"the full traceback is in {path}" if path else "the traceback could not be written anywhere"
            click.secho(f"Error: unexpected {describe_error(exc)} ({where})", fg="red", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cytocompare")
def cli() -> None:
    """Compare classical and deep classifiers of single-cell images under identical conditions."""


@cli.command()
@click.argument("protocol", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory (default: runs/<protocol name>). Re-using it resumes the run.")
@click.option("--data", "data_path", default=None, help="Override the protocol's data.path (e.g. ../shared/data/matek-bm).")
@click.option("--test-data", "test_data_path", default=None,
              help="Override the protocol's test_data.path; NAME=PATH for one of several named test sets.")
@click.option("--only", multiple=True, help="Run only this method (repeatable).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run feature extraction and the folds on a dask cluster: its scheduler's address "
                   "(tcp://host:8786), or 'local' for a LocalCluster of n_jobs worker processes here. "
                   "Overrides the protocol's compute key; results are the same.")
@click.option("-v", "--verbose", count=True, help="More detail (each fold's method and test images).")
@click.option("-q", "--quiet", count=True, help="Only warnings, errors and the final line.")
def run(protocol: Path, output: Path | None, data_path: str | None, test_data_path: str | None,
        only: tuple[str, ...], scheduler: str | None, verbose: int, quiet: int) -> None:
    """Validate PROTOCOL completely, then run every installed method on the identical splits."""
    from cytocompare import distributed
    from cytocompare.config import load_protocol
    from cytocompare.datasets import resolve_data_path
    from cytocompare.progress import QUIET, make_progress
    from cytocompare.runner import Runner

    proto = load_protocol(protocol)  # the runner checks it against the registry before any work
    if scheduler is not None:
        from cytocompare.config import ComputeSpec

        proto.compute = ComputeSpec(backend="dask", scheduler=scheduler)
    out = output or Path("runs") / proto.name
    # a path given on the command line is relative to the working directory
    data = None if data_path is None else resolve_data_path(data_path, Path.cwd())
    verbosity = max(-1, min(1, verbose - quiet))
    main_rank = distributed.current().is_main  # under torchrun the other ranks show only warnings
    # a live display when stderr is a terminal, else plain lines
    with make_progress(verbosity if main_rank else QUIET, live=None if main_rank else False) as log:
        result = Runner(proto, out, protocol_path=protocol, data_path=data, test_data_path=test_data_path,
                        only=list(only) or None, log=log).run()
    if not main_rank:
        return
    click.echo(f"finished: {len(result.methods_run)} method(s), {result.folds_done} fold(s) run, "
               f"{result.folds_resumed} fold(s) resumed; results in {result.run_dir}")
    index = result.run_dir / "index.html"
    if index.exists() and verbosity >= 0:
        click.echo(f"open {index}")


@cli.command()
@click.argument("protocol", type=click.Path(dir_okay=False, path_type=Path))
def validate(protocol: Path) -> None:
    """Check PROTOCOL (schema, component names, parameters) without running anything."""
    from cytocompare.config import validate_protocol
    from cytocompare.datasets import is_bundled, resolve_data_path

    proto, skipped = validate_protocol(protocol)
    for name in skipped:
        click.echo(f"note: optional method {name!r} will be skipped: its plugin is not installed")
    named = [("data", proto.data, "--data")] + [
        ("test_data" if n == "" else f"test_data.{n}", spec, "--test-data" if n == "" else f"--test-data {n}=PATH")
        for n, spec in proto.test_sets.items()]
    for key, spec, flag in named:
        if is_bundled(spec.path):
            continue
        path = Path(resolve_data_path(spec.path, protocol.resolve().parent))
        if not path.exists():
            click.echo(f"note: {key}.path {path} does not exist here; give {flag} when running")
    click.echo(f"{protocol}: valid ({len(proto.methods)} methods, {len(proto.splits)} splits)")


@cli.command("list")
@click.option("--kind", type=click.Choice(KINDS),
              default=None, help="Only this kind of component.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_components(kind: str | None, as_json: bool) -> None:
    """List registered components (name, kind, distribution, version). Imports no backend."""
    from cytocompare.plugins import get_registry

    specs = [s for s in get_registry() if kind is None or s.kind == kind]
    if as_json:
        click.echo(json.dumps([{"name": s.name, "kind": s.kind, "distribution": s.distribution, "version": s.version,
                                "plugin": s.plugin, "factory": s.factory_path, "description": s.description}
                               for s in specs], indent=2))
        return
    rows = [(s.kind, s.name, f"{s.distribution} {s.version}", s.description) for s in specs]
    _table(["kind", "name", "distribution", "description"], rows)


@cli.command()
@click.option("--requirements", is_flag=True, help="Print pinned name==version lines.")
def plugins(requirements: bool) -> None:
    """List installed plugins with their distribution, version and components."""
    from cytocompare.plugins import get_plugin_manager, get_registry, plugin_distributions

    dists = plugin_distributions(get_plugin_manager())
    by_plugin: dict[str, list[str]] = {}
    for s in get_registry():
        by_plugin.setdefault(s.plugin, []).append(f"{s.kind}:{s.name}")
    if requirements:
        for dist, version in sorted({v for v in dists.values() if v[1]}):
            click.echo(f"{dist}=={version}")
        return
    rows = [(name, dist, version, ", ".join(by_plugin.get(name, []))) for name, (dist, version) in sorted(dists.items())]
    _table(["plugin", "distribution", "version", "components"], rows)


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--reporter", "reporters", multiple=True, help="Only this reporter (repeatable).")
def report(run_dir: Path, reporters: tuple[str, ...]) -> None:
    """Recompute metrics and redraw tables and charts of a finished (or partial) RUN_DIR."""
    from cytocompare.evaluation import evaluate_and_report
    from cytocompare.locking import DirectoryLock

    # not while a run writes the same directory
    with DirectoryLock(run_dir, what="run directory", create=False):
        written = evaluate_and_report(run_dir, reporters=list(reporters) or None)
    for path in written:
        click.echo(str(path))


@cli.command()
@click.argument("name")
@click.option("--kind", default="classifier", show_default=True,
              type=click.Choice(METHOD_KINDS))
def check(name: str, kind: str) -> None:
    """Run the conformance kit on one registered component (with its fast parameters)."""
    from cytocompare.plugins import get_registry
    from cytocompare.testing import check_component

    spec = get_registry().get(kind, name)  # type: ignore[arg-type]
    component = spec.create(**spec.fast_params)
    results = check_component(component, on_fail=None)
    _table(["check", "status", "detail"], [(r["check_name"], r["status"], r.get("reason", "")) for r in results])
    if any(r["status"] == "failed" for r in results):
        sys.exit(1)


@cli.command()
def schema() -> None:
    """Print the JSON Schema of protocol files."""
    from cytocompare.config import Protocol

    click.echo(json.dumps(Protocol.model_json_schema(), indent=2))


@cli.group()
def data() -> None:
    """Check a data folder against the published data set (docs/data.md)."""


def _size(value: str | None) -> tuple[int, int] | None:
    """``HxW`` (e.g. 250x250) -> (height, width)."""
    if value is None:
        return None
    try:
        h, w = (int(x) for x in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected HEIGHTxWIDTH, e.g. 250x250") from None
    return h, w


@data.command("check")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--protocol", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Take the class scheme, layout, expected image size and near-duplicate threshold from this "
                   "protocol (e.g. protocols/paper.yaml).")
@click.option("--scheme", default=None, help="Class scheme whose published counts are expected (default: the "
              "protocol's, else matek2021).")
@click.option("--image-size", default=None, metavar="HxW",
              help="Expected size of every image, e.g. 250x250 (default: the protocol's data.image_size, else "
                   "not checked).")
@click.option("--near-duplicates/--no-near-duplicates", default=False, show_default=True,
              help="Also look for near-identical images (perceptual hash; the protocol's threshold, else 16).")
def data_check(path: Path, protocol: Path | None, scheme: str | None, image_size: str | None,
               near_duplicates: bool) -> None:
    """Compare the images under PATH with the scheme's classes and published counts; exit 1 if they differ."""
    from rich.console import Console

    from cytocompare.config import load_protocol
    from cytocompare.data_check import check_data, class_table, summary_lines
    from cytocompare.near_duplicates import DEFAULT_THRESHOLD

    proto = None if protocol is None else load_protocol(protocol)
    size = _size(image_size) or (proto.data.image_size if proto is not None else None)
    threshold = None
    if near_duplicates:
        threshold = proto.near_duplicates.threshold if proto is not None else DEFAULT_THRESHOLD
        threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    report = check_data(path, scheme=scheme or (proto.class_scheme if proto is not None else "matek2021"),
                        layout=proto.data.layout if proto is not None else "auto",
                        image_size=None if size is None else tuple(size), near_duplicate_threshold=threshold)
    console = Console(width=max(100, Console().width), highlight=False)
    console.print(class_table(report))
    for line in summary_lines(report):
        console.print(line, markup=False, soft_wrap=True)
    if not report.matches:
        sys.exit(1)


def _table(header: list[str], rows: list[tuple]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    widths[-1] = 0  # the last column is free text
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    click.echo(fmt.format(*header).rstrip())
    for row in rows:
        click.echo(fmt.format(*[str(x) for x in row]).rstrip())


def main() -> None:
    from cytocompare.plugins import get_plugin_manager

    try:
        get_plugin_manager().hook.register_commands(cli=cli)
    except CytocompareError as exc:
        click.secho(f"Error: {exc}", fg="red", err=True)
        sys.exit(2)
    cli()
