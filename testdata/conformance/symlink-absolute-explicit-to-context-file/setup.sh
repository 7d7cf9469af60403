ln -s /etc/passwd context/lnk
