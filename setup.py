"""wan_streamer_jax: a native-streaming, full-duplex audio-video-text model library in JAX."""

from setuptools import find_packages, setup

setup(
    name="wan_streamer_jax",
    version="0.1.0",
    description="Native-streaming full-duplex audio-video-text foundation model in JAX (Wan-Streamer design)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["wan_streamer_jax", "wan_streamer_jax.*", "data_pipelines",
                                    "data_pipelines.*", "launch", "launch.*", "configs"]),
    install_requires=[
        "jax[cpu]>=0.10.2,<0.11",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12,<0.13",
        "grain>=0.2.18,<0.3",
        "tensorflow-datasets>=4.9.10,<5",
        "numpy>=2.0,<3",
        "scipy>=1.13,<2",
        "absl-py>=2.1,<3",
        "ml_collections>=1.1,<2",
        "flatbuffers>=24.3",
        "espeakng-loader>=0.2.4,<0.3",
        "pystoi>=0.4,<0.5",
        "pesq>=0.0.4,<0.1",  # ITU-T P.862 PESQ (builds a C extension: needs a C compiler)
        "tqdm>=4.66",
        "tensorboardX>=2.6",
        "matplotlib>=3.8",
        "pillow>=10",
        "imageio-ffmpeg>=0.5,<1",
        "pocketsphinx>=5.0,<6",  # the evaluation's speech judge (its wheel ships the en-us model)
        "aiohttp>=3.9,<4",
    ],
    extras_require={"test": ["pytest>=8", "pytest-xdist>=3.5", "portpicker>=1.6", "selenium>=4.20,<5"],
                    "tensorboard": ["tensorboard>=2.15"]},
    package_data={"wan_streamer_jax.serving": ["static/*"]},
    entry_points={"console_scripts": [
        "wan-train=launch.train:run",
        "wan-train-codec=launch.train_codec:run",
        "wan-tokenize=launch.tokenize:run",
        "wan-make-dataset=launch.make_dataset:run",
        "wan-bench=launch.bench:run",
        "wan-describe=launch.describe:run",
        "wan-evaluate=launch.evaluate:run",
        "wan-demo=launch.demo:run",
    ]},
)
