ln -s dir context/dirlink
