"""Defaults live in one place, and they are the notebook's."""

import ast
import inspect

from deepdream_caffe import dream, params


def notebook_defaults(source, function):
    tree = ast.parse(source.replace("xrange", "range"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == function:
            args = node.args.args[-len(node.args.defaults) :]
            pairs = zip(args, node.args.defaults, strict=True)
            return {a.arg: ast.literal_eval(d) for a, d in pairs if not isinstance(d, ast.Name)}
    raise AssertionError(f"{function} not found")


def test_defaults_match_notebook(notebook_cells):
    step = notebook_defaults(notebook_cells[6], "make_step")
    octaves = notebook_defaults(notebook_cells[8].replace("print octave", "#"), "deepdream")
    expected = {**step, **octaves}
    ours = params.DreamParams().as_kwargs()
    assert ours == {k: expected[k] for k in ours}
    assert "end = 'inception_3b/output'" in notebook_cells[25]
    assert params.GUIDE_END == "inception_3b/output"
    assert f"range({params.ZOOM_FRAMES})" in notebook_cells[19].replace("xrange", "range")
    assert f"s = {params.ZOOM_SCALE}" in notebook_cells[19]


def test_functions_have_the_notebook_signatures(notebook_cells):
    for function, cell in [(dream.make_step, 6), (dream.deepdream, 8)]:
        expected = notebook_defaults(
            notebook_cells[cell].replace("print octave", "#"), function.__name__
        )
        got = {
            k: p.default for k, p in inspect.signature(function).parameters.items() if k in expected
        }
        assert got == expected
