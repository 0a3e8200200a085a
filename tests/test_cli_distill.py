import json

import pytest

from slimkit.cli import main
from slimkit.io import load


def test_distill_prints_json_and_saves_the_student(capsys, tmp_path):
    code = main(["distill", "--teacher", "mlp", "--student", "mlp:hidden=32", "--steps", "200", "--batch-size", "64",
                 "--alpha", "0.9", "--temperature", "4", "--json", "--quiet", "--out", str(tmp_path / "student")])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["task"] == "digits"
    assert summary["student_parameters"] < summary["teacher_parameters"] / 4
    assert summary["student_after"]["accuracy"] > summary["student_before"]["accuracy"] + 0.5
    student = load(tmp_path / "student")
    assert student.config.hidden == (32,)


def test_from_spec_builds_models_and_names_bad_settings():
    from slimkit.errors import UserInputError
    from slimkit.models.spec import from_spec

    assert from_spec("gpt:n_layer=1,n_head=2,n_embd=32").config.n_layer == 1
    with pytest.raises(UserInputError, match="gpt has no setting 'layers'; settings: vocab_size"):
        from_spec("gpt:layers=2")
    with pytest.raises(UserInputError, match="unknown architecture 'bert'"):
        from_spec("bert")
    with pytest.raises(UserInputError, match="n_embd=30 must be a multiple of n_head=4"):
        from_spec("gpt:n_embd=30")


@pytest.mark.parametrize("argv, message", [
    (["--student", "mlp:width=3"], "mlp has no setting 'width'"),
    (["--student", "mlp", "--features", "net.1"], "--features 'net.1': write STUDENT_MODULE:TEACHER_MODULE"),
    (["--student", "mlp", "--features", "net.9:net.1", "--feature-weight", "1"],
     "the student has no module named 'net.9'"),
    (["--student", "gpt:n_layer=1"], "the student (GPT) is a pycorpus model and cannot learn the digits task"),
    (["--student", "mlp", "--alpha", "2"], "alpha=2.0 must lie in [0, 1]"),
])
def test_distill_user_errors_exit_2_with_one_line(capsys, argv, message):
    try:
        code = main(["distill", "--teacher", "mlp", "--steps", "1", *argv])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
