"""Package metadata for mmseg-keyprotect."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r"__version__ = '([^']+)'",
                    (HERE / 'mmseg_keyprotect' / 'version.py').read_text()).group(1)

setup(
    name='mmseg-keyprotect',
    version=VERSION,
    description='Key-based model protection (block-wise image encryption and feature-map '
    'permutation) for MMSegmentation',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    author='mmseg-keyprotect developers',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(include=['mmseg_keyprotect', 'mmseg_keyprotect.*']),
    install_requires=[
        'mmengine==0.10.7',
        'mmcv>=2.0.0rc4,<2.2.0',
        'mmsegmentation==1.2.2',
        # mmsegmentation imports these without declaring them
        'ftfy',
        'regex',
        'cryptography>=42',  # AES-GCM sealing of checkpoints (models/weight_encryption.py)
        'numpy',
        'opencv-python',
        'pyffx',
        'scipy',  # Hungarian rounding in the permutation-recovery attack
        'torch>=2.0',
        'tqdm',
    ],
    extras_require={
        'tests': ['pytest>=7', 'pytest-timeout', 'matplotlib'],
        # the packages the model families import that the default install lacks
        # (Mask2Former and MaskFormer: mmdet; ConvNeXt and PoolFormer: mmpretrain; VPD: what
        # Stable Diffusion's `ldm` imports). `ldm` itself comes from stable-diffusion-sdkit
        # 2.1.5, which `make sweep` installs with --no-deps: it pins 2022 versions
        # (pytorch-lightning 1.4.2, opencv-python 4.6.0.66, torchmetrics 0.6.0, ...) that pip
        # would put over this venv's. pytorch-lightning 1.9.5 still has the
        # `pytorch_lightning.utilities.distributed` that `ldm` imports; transformers 4.x because
        # mmpretrain's BLIP module fails to import with 5.x
        'families': ['mmdet==3.3.0', 'mmpretrain==1.2.0', 'pytorch-lightning==1.9.5',
                     'omegaconf==2.4.0', 'transformers==4.33.2', 'open-clip-torch==3.3.0',
                     'einops'],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'Framework :: Pytest',
        'License :: OSI Approved :: Apache Software License',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
