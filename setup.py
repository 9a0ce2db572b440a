from setuptools import find_packages, setup

setup(
    name='colossal_runner',
    version='0.1.0',
    description='A config-driven training framework for PyTorch with pipeline parallelism built in',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['colossal_runner', 'colossal_runner.*']),
    python_requires='>=3.9',
    install_requires=[
        'torch>=2.1',
        'torchvision',
        'numpy',
        'addict',
        'yapf>=0.40',
        'pyyaml',
        'tensorboard',
        'tqdm',
        'scikit-learn',
    ],
    extras_require={
        'dev': ['pytest', 'pytest-timeout', 'ruff', 'hypothesis'],
    },
    entry_points={
        'console_scripts': [
            'colossal-train=colossal_runner.train:main',
            'colossal-test=colossal_runner.test:main',
        ],
    },
)
