"""RobustlabError: one line with the problem and the fix, kept when pickled."""

import pickle

from robustlab.errors import RobustlabError


def test_message_attributes_and_pickling():
    error = RobustlabError("eps must be >= 0, got -1", "pass eps=0.3")
    assert str(error) == "eps must be >= 0, got -1; fix: pass eps=0.3"
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is RobustlabError and str(copy) == str(error)
    assert (copy.problem, copy.fix) == (error.problem, error.fix)
