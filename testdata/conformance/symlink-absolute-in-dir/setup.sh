ln -s /etc/passwd context/dir/abs
