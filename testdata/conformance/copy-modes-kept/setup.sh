chmod 0600 context/private
chmod 0755 context/script.sh
chmod 0664 context/group
chmod 0750 context/dir
