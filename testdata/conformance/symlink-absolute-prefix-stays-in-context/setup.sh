ln -s /etc context/lnk
