"""The joblib Memory tutorial ("Using joblib to cache slow computations (for
science)"), its examples run with only the import changed:
``from memento import Memory`` for ``from joblib import Memory``, and
``import memento as joblib`` for ``import joblib`` in its pipeline.py.

Each notebook cell runs as IPython runs it: its source registered under a
cell file name (so that ``inspect.getsource`` finds it), executed in one
namespace shared by the cells. IPython magics are replaced by what they
stand for: ``%timeit f(x)`` by a few calls of ``f(x)``, ``ls $cachedir/`` by
a look at the folder, ``%%writefile`` by writing the file.

What the tutorial shows, and what memento does:

- In[63] ``Memory(cachedir=cachedir)``: joblib's name of ``location``
  before 0.12 (today's joblib refuses it); memento accepts it with a
  ``DeprecationWarning``.
- In[64]-[66]: the first call of ``new_sine2(0.1)`` computes, the next ones
  read the result (no ``[Memory] Calling`` line); the same for 0.2.
- In[73]-[75]: ``new_sine2`` defined again without the decorator and
  wrapped by ``memory.cache(new_sine2)``. joblib computes again (its
  ``[Memory] Calling`` output): it compares the function's source lines,
  and those of In[64] held the ``@memory.cache`` line. memento leaves the
  decorator lines out of the fingerprint (they were applied to the
  function, they are not its code), so the two are one function and its
  results are read: a difference on purpose.
- In[76]-[82]: joblib's folder layout (``joblib/<module>/<function>/<hash>/
  output.pkl``, ``metadata.json``, ``func_code.py``). memento's location is
  the cache folder itself, in memento's entry format (``memento ls`` lists
  it); the metadata (``duration``, ``input_args``) is what
  ``new_sine2.call(0.1)`` returns. memento keeps a fingerprint of the
  function, not a copy of its code.
- In[59]-[61]: ``pipeline.py``'s ``slow_sine(0.1)`` is 0.09983341664682815,
  computed once, then read, in a module of its own.
"""

import linecache
import math
import os
import textwrap

import pytest

CELLS = {
    3: """
        from math import sin
        """,
    5: """
        import time
        def sine(x):
            time.sleep(0.2)
            return sin(x)
        """,
    7: """
        sine_one_tenth = sine(0.1)
        """,
    8: """
        def new_sine(x):
            if x == 0.1:
                return sine_one_tenth
            else:
                return sine(x)
        """,
    11: """
        _previously_seen_arguments = {}
        def new_sine(x):
            if x not in _previously_seen_arguments:
                _previously_seen_arguments[x] = sine(x)
            return _previously_seen_arguments[x]
        """,
    # The one line changed: `from joblib import Memory`.
    63: """
        from memento import Memory
        cachedir = 'cache'
        memory = Memory(cachedir=cachedir)
        """,
    64: """
        @memory.cache
        def new_sine2(x):
            return sine(x)
        """,
    73: """
        def new_sine2(x):
            return sine(x)

        new_sine2 = memory.cache(new_sine2)
        """,
}

# In[59], with `import joblib` changed to `import memento as joblib`.
PIPELINE = """
import memento as joblib
import time
from math import sin

memory = joblib.Memory(cachedir='./cache')

@memory.cache
def slow_sine(x):
    time.sleep(0.2)
    return sin(x)

@memory.cache
def foo(x):
    return x + 1
"""


class Notebook:
    """Cells run as IPython runs them: one namespace, each cell's source
    in linecache under its own file name."""

    def __init__(self):
        self.namespace = {"__name__": "tutorial_notebook"}
        self.files = []

    def run(self, number, source=None):
        source = textwrap.dedent(source if source is not None else CELLS[number]).lstrip()
        filename = f"<ipython-input-{number}-memento>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        self.files.append(filename)
        exec(compile(source, filename, "exec"), self.namespace)

    def eval(self, expression):
        return eval(expression, self.namespace)

    def close(self):
        for filename in self.files:
            linecache.cache.pop(filename, None)


@pytest.fixture
def notebook(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    nb = Notebook()
    yield nb
    nb.close()


def timeit(nb, capsys, expression, loops=3):
    """``%timeit expression``: a few calls; the values and what they
    printed."""
    values = [nb.eval(expression) for _ in range(loops)]
    return values, capsys.readouterr().out


def test_the_tutorial_with_only_the_import_changed(notebook, capsys, tmp_path):
    nb = notebook
    # In[3]-[13]: the hand-made cache the tutorial starts from.
    for cell in (3, 5, 7, 8):
        nb.run(cell)
    assert nb.eval("new_sine(0.1)") == math.sin(0.1)
    nb.run(11)
    assert nb.eval("new_sine(0.1)") == nb.eval("new_sine(0.1)") == math.sin(0.1)

    # In[63]: the import changed, nothing else.
    with pytest.warns(DeprecationWarning, match="cachedir is joblib's old name of location"):
        nb.run(63)
    assert nb.eval("memory.location") == "cache"

    # In[64]-[66]: computed once per argument, then read.
    nb.run(64)
    values, out = timeit(nb, capsys, "new_sine2(0.1)")
    assert values == [math.sin(0.1)] * 3
    assert out.count("[Memory] Calling") == 1
    assert "new_sine2" in out and "x=0.1" in out
    values, out = timeit(nb, capsys, "new_sine2(0.2)")
    assert values == [math.sin(0.2)] * 3
    assert out.count("[Memory] Calling") == 1

    # In[73]-[75]: the same function, decorated by a call instead of a
    # decorator line. joblib computes both again; memento reads them.
    nb.run(73)
    values, out = timeit(nb, capsys, "new_sine2(0.1)")
    assert values == [math.sin(0.1)] * 3
    assert "[Memory] Calling" not in out, "In[74]: the result of In[65] was not read"
    values, out = timeit(nb, capsys, "new_sine2(0.2)")
    assert values == [math.sin(0.2)] * 3
    assert "[Memory] Calling" not in out, "In[75]: the result of In[66] was not read"

    # In[76]: `ls $cachedir/`: the folder holds memento's cache.
    assert (tmp_path / "cache").is_dir()
    assert (tmp_path / "cache" / ".gitignore").read_text().strip() == "*"
    # In[81]: the metadata joblib writes in metadata.json.
    value, metadata = nb.eval("new_sine2.call(0.1)")
    capsys.readouterr()
    assert value == math.sin(0.1)
    assert metadata["input_args"] == {"x": "0.1"}
    assert metadata["duration"] >= 0.2


def test_the_tutorial_pipeline_module(notebook, capsys, tmp_path, monkeypatch):
    """In[59]-[62]: functions in a module of their own."""
    # In[59]: %%writefile pipeline.py
    (tmp_path / "pipeline.py").write_text(PIPELINE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "pipeline", raising=False)
    with pytest.warns(DeprecationWarning, match="cachedir"):
        notebook.run(60, "from pipeline import slow_sine")
    # In[61]
    assert notebook.eval("slow_sine(0.1)") == 0.09983341664682815
    assert capsys.readouterr().out.count("[Memory] Calling") == 1
    assert notebook.eval("slow_sine(0.1)") == 0.09983341664682815
    assert "[Memory] Calling" not in capsys.readouterr().out
    assert notebook.eval("slow_sine.check_call_in_cache(0.1)")
    assert os.path.isdir(tmp_path / "cache")
    __import__("sys").modules.pop("pipeline", None)
