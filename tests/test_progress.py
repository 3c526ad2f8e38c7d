"""The progress bar is drawn for a person (forced on, a terminal, a Jupyter kernel) and never when
``ORTHO_PROGRESS=0`` (the Makefile's book, notebook and test runs), under CI, or into a pipe."""
import importlib
import sys

import pytest

import ortho_lib as ol
progress_mod = importlib.import_module("ortho_lib.notebook")   # the module holding ol.progress


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("ORTHO_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(progress_mod, "_in_ipython_kernel", lambda: False)


def test_progress_forced_on_draws_a_bar_and_yields_every_item(monkeypatch, capsys):
    monkeypatch.setenv("ORTHO_PROGRESS", "1")
    assert list(ol.progress(range(5), desc="sweep")) == [0, 1, 2, 3, 4]
    assert "sweep" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_progress_switched_off_by_env_writes_nothing(monkeypatch, capsys, value):
    monkeypatch.setenv("ORTHO_PROGRESS", value)
    monkeypatch.setattr(progress_mod, "_in_ipython_kernel", lambda: True)   # even in Jupyter
    assert list(ol.progress(iter("ab"), desc="sweep")) == ["a", "b"]
    assert capsys.readouterr().err == ""


def test_progress_off_under_ci_even_in_a_kernel(no_env, monkeypatch, capsys):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(progress_mod, "_in_ipython_kernel", lambda: True)
    assert list(ol.progress(range(3), desc="sweep")) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_progress_on_in_a_jupyter_kernel_when_env_unset(no_env, monkeypatch):
    monkeypatch.setattr(progress_mod, "_in_ipython_kernel", lambda: True)
    assert progress_mod.progress_enabled()


def test_progress_off_when_stderr_is_not_a_terminal(no_env, monkeypatch, capsys):
    class Pipe:
        def isatty(self):
            return False

        def write(self, s):
            raise AssertionError("nothing may be written")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stderr", Pipe())
    assert not progress_mod.progress_enabled()
    assert list(ol.progress(range(2))) == [0, 1]


def test_progress_on_in_a_terminal_when_env_unset(no_env, monkeypatch):
    class Tty:
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    assert progress_mod.progress_enabled()


def test_progress_keeps_the_tqdm_interface_when_disabled(monkeypatch):
    monkeypatch.setenv("ORTHO_PROGRESS", "0")
    bar = ol.progress(range(2), desc="sweep")
    bar.set_postfix(x=1)          # chapters may annotate a bar; must not fail when it is off
    assert list(bar) == [0, 1]
