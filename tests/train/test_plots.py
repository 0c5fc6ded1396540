"""The run figures and the figure helpers the notebooks share."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dfbst_np.train.config import default_config  # noqa: E402
from dfbst_np.train.plots import DPI, plot_run, readable_log_axis, run_title, signed_image  # noqa: E402
from dfbst_np.train.run import write_metrics  # noqa: E402


def _fake_run(folder):
    default_config("lenet300_100", "dfbst").save(folder / "config.json")
    rows = []
    for e in range(1, 4):
        rows.append({"epoch": e, "train_acc": 0.5 + 0.1 * e, "test_acc": 0.5 + 0.09 * e,
                     "density": 0.9 - 0.1 * e, "bdensity": 0.8 - 0.1 * e,
                     "density/fc1": 0.9 - 0.1 * e, "density/fc2": 0.95, "density/fc3": 1.0,
                     "bdensity/fc1": 0.8 - 0.1 * e, "bdensity/fc2": 0.7, "bdensity/fc3": 0.9,
                     "flops_exact": 0.9, "flops_ideal": 0.7})
    write_metrics(folder / "metrics.csv", rows)


def test_plot_run_writes_three_figures_at_the_project_dpi(tmp_path):
    _fake_run(tmp_path)
    paths = plot_run(tmp_path)
    assert [p.name for p in paths] == ["accuracy.png", "density.png", "flops.png"]
    height, width = mpimg.imread(paths[0]).shape[:2]
    assert (width, height) == (6 * DPI, 4 * DPI) and DPI >= 100


def test_run_title_names_model_method_and_data():
    assert run_title("lenet300_100", "dfbst", "sample") == "LeNet-300-100, DFBST, Fashion-MNIST sample"
    assert run_title("vgg16", "dense", "cifar10") == "VGG-16, dense, CIFAR-10"


def test_log_ticks_are_plain_numbers():
    fig, ax = plt.subplots()
    ax.semilogy([0, 1], [0.3, 0.9])
    readable_log_axis(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True) if t.get_text()]
    plt.close(fig)
    assert labels and all("times" not in s and "^" not in s for s in labels)
    assert "0.5" in labels and "0.3" in labels


def test_signed_image_limits_are_symmetric_with_a_colorbar():
    fig, ax = plt.subplots()
    im = signed_image(ax, np.array([[-0.2, 1.0], [0.3, 0.0]]))
    assert im.get_clim() == (-1.0, 1.0) and len(fig.axes) == 2      # the image and its colorbar
    plt.close(fig)
