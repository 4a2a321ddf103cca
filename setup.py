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
        # the OpenMMLab packages five of mmseg's model families import (Mask2Former and
        # MaskFormer: mmdet; ConvNeXt and PoolFormer: mmpretrain); make sweep installs them
        'families': ['mmdet==3.3.0', 'mmpretrain==1.2.0'],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'Framework :: Pytest',
        'License :: OSI Approved :: Apache Software License',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
