import json

from click.testing import CliRunner

from cytocompare.cli import cli


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_check_runs_the_conformance_kit():
    r = run("check", "colour-logreg")
    assert r.exit_code == 0, r.output
    assert "check_fit_returns_self" in r.output and "passed" in r.output
    assert "failed" not in r.output


def test_check_unknown_component():
    r = run("check", "colour-logerg")
    assert r.exit_code == 2 and "did you mean 'colour-logreg'" in r.output


def test_list_filters_by_kind_and_json():
    r = run("list", "--kind", "classifier", "--json")
    assert r.exit_code == 0
    rows = json.loads(r.output)
    assert {row["kind"] for row in rows} == {"classifier"}
    assert any(row["name"] == "colour-logreg" and row["distribution"] == "cytocompare-example" for row in rows)


def test_plugins_requirements_are_pinned():
    r = run("plugins", "--requirements")
    assert r.exit_code == 0
    lines = r.output.split()
    assert any(line.startswith("cytocompare==") for line in lines)
    assert any(line.startswith("cytocompare-example==") for line in lines)


def test_schema_is_json_schema():
    r = run("schema")
    schema = json.loads(r.output)
    assert "methods" in schema["properties"] and "splits" in schema["properties"]


def test_validate_notes_a_missing_data_folder(tmp_path):
    protocol = tmp_path / "p.yaml"
    protocol.write_text(
        "version: 1\nname: t\ndata: {path: nowhere}\nsplits: {cv: {kind: kfold}}\n"
        "methods: {m: {classifier: {name: colour-logreg}, splits: [cv]}}\n"
    )
    r = run("validate", str(protocol))
    assert r.exit_code == 0
    assert "does not exist here" in r.output and "--data" in r.output


def test_report_refuses_a_run_directory_a_run_is_writing(tmp_path):
    from cytocompare.locking import DirectoryLock

    with DirectoryLock(tmp_path, what="run directory"):
        r = run("report", str(tmp_path))
    assert r.exit_code == 2 and "is in use" in r.output and "Traceback" not in r.output
