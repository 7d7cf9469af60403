chmod 4755 context/suid
chmod 2755 context/sgid
chmod 1777 context/sticky
