"""tools/test.py prints its metrics with the digits train.py's final line uses."""
from colossal_runner import test as test_cli
from colossal_runner import train as train_cli


def test_test_metrics_keep_small_values_and_match_the_train_tools_format():
    metrics = dict(Loss=2.6e-05, Accuracy=0.988889, Perplexity=123456.789)
    line = test_cli.format_test_metrics(metrics)
    assert line == 'Test metrics: Loss=2.6e-05, Accuracy=0.988889, Perplexity=123457'  # not Loss=0.0000
    final = train_cli.format_final_metrics(dict(test=metrics), {})
    assert line[len('Test metrics: '):] == final.replace('test ', '')
