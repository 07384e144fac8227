"""recbole_promptmm: PromptMM multimodal knowledge distillation for RecBole.

RecBole 1.2.1 pins ray<=2.6.3, which cannot be installed beside numpy 2 or a current ray[tune]; so recbole is
not listed here. Install it with ``pip install --no-deps recbole==1.2.1`` (see README.md / requirements.txt).
"""

from setuptools import find_packages, setup

setup(
    name="recbole_promptmm",
    version="0.1.0",
    description="PromptMM (multi-modal knowledge distillation with prompt-tuning) for RecBole",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # every package under recbole_promptmm/ (new subpackages included), plus properties/ installed inside it
    packages=[*find_packages(include=["recbole_promptmm", "recbole_promptmm.*"]), "recbole_promptmm.properties"],
    package_dir={"recbole_promptmm.properties": "properties"},
    package_data={
        "recbole_promptmm.properties": ["*.yaml", "**/*.yaml"],  # recursive (setuptools >= 62.3)
        "recbole_promptmm.data": ["files/**/*"],
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
        "faiss-cpu",  # RecBole's NCL
    ],
    entry_points={"console_scripts": ["recbole-promptmm = recbole_promptmm.cli:main"]},
)
