"""recbole_promptmm: PromptMM multimodal knowledge distillation for RecBole.

RecBole 1.2.1 pins ray<=2.6.3, which cannot be installed beside numpy 2 or a current ray[tune]; so recbole is
not listed here. Install it with ``pip install --no-deps recbole==1.2.1`` (see README.md / requirements.txt).
"""

from setuptools import setup

setup(
    name="recbole_promptmm",
    version="0.1.0",
    description="PromptMM (multi-modal knowledge distillation with prompt-tuning) for RecBole",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=[
        "recbole_promptmm",
        "recbole_promptmm.data",
        "recbole_promptmm.model",
        "recbole_promptmm.trainer",
        "recbole_promptmm.tune",
        "recbole_promptmm.compare",
        "recbole_promptmm.properties",
    ],
    package_dir={"recbole_promptmm.properties": "properties"},
    package_data={
        "recbole_promptmm.properties": ["*.yaml", "*/*.yaml"],
        "recbole_promptmm.data": ["files/*/*.npy"],
    },
    install_requires=[
        "torch>=2.6",
        "numpy>=1.26",
        "scipy>=1.13",
        "pandas<3",
        "ray[tune]>=2.40",
        "pyyaml",
        "tqdm",
        "colorlog==4.7.2",
        "colorama==0.4.4",
        "scikit-learn",
        "tensorboard",
        "thop",
        "tabulate",
        "plotly",
        "texttable",
        "psutil",
        "matplotlib",
    ],
    scripts=[],
    entry_points={"console_scripts": []},
)
