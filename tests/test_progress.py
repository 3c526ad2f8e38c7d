"""The progress bar wrapper yields every item and can be switched off."""
import ortho_lib as ol


def test_progress_yields_every_item(capsys):
    assert list(ol.progress(range(5), desc="sweep")) == [0, 1, 2, 3, 4]
    assert "sweep" in capsys.readouterr().err


def test_progress_is_silent_when_disabled(monkeypatch, capsys):
    monkeypatch.setenv("ORTHO_PROGRESS", "0")
    assert list(ol.progress(iter("ab"))) == ["a", "b"]
    assert capsys.readouterr().err == ""
